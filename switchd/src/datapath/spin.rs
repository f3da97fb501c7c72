//! How long a datapath thread polls after forwarding before it blocks.
//!
//! Blocking makes the next frame pay a thread wakeup: on the 2-core VMs we measure
//! on, one thread waking another on an idle CPU takes 30-75 µs, far more than
//! forwarding a frame. Polling costs CPU. A fixed window is wrong both ways. 50 µs
//! is too short for a TCP stream, whose frames come tens of microseconds apart:
//! every sleep stalls the stream for a wakeup (one stream through switchd, manual
//! runs on a 2-core EPYC VM: 10.3-12.0 Gbit/s at 50 µs, 12.9-13.4 at 1 ms). A
//! long window keeps a core busy for a trickle of frames.
//!
//! So the window adapts, the way the kernel's cpuidle-haltpoll governor adapts its
//! poll time:
//! - a sleep that ended within the ceiling (`--spin-us`) would have been avoided
//!   by polling: the window grows to twice that gap, up to the ceiling;
//! - a longer sleep: the window halves, down to the floor;
//! - a budget: polling that finds nothing may cost at most `--spin-budget` percent
//!   of the time spent forwarding; past it the window is the floor. A TCP stream
//!   polls about as long as it works, or more: the thread waits on the sender for
//!   each 64 KB frame (same runs, 1 ms ceiling: budget 100%: 10.3-12.0 Gbit/s,
//!   200-300%: 12.1-12.9, unlimited: 13.4-13.6). The default, 300%, keeps most of
//!   that, while a trickle of frames spaced just under the ceiling (a ping-pong at
//!   2000/s polls 20x longer than it works) gets only the floor instead of a
//!   busy core. An idle switch polls not at all: the window only opens when
//!   frames arrive.
//!
//! - work earns polling time by the frame, at most `WORK_CREDIT_PER_FRAME`
//!   each: a broadcast flooded to a thousand ports takes over a millisecond to
//!   send, which says nothing about when the next frame comes (1000 ports, one
//!   broadcast every 2 ms: the thread polled most of the gaps, 97% of a core,
//!   against 70% not polling at all; `scripts/bench flood`).
//!
//! The time counts decay by half every `EPOCH`, so the budget follows the load.

use std::time::{Duration, Instant};

/// The shortest window: it catches the reply to what was just forwarded when the
/// peer answers from its softirq (a ping, an ARP), measured 63 → 46 µs ping p50.
pub const SPIN_FLOOR: Duration = Duration::from_micros(50);
const EPOCH: Duration = Duration::from_millis(100);
/// More than forwarding a 64 KB GSO frame takes (10-20 µs), so a stream of
/// frames earns what it worked.
pub(super) const WORK_CREDIT_PER_FRAME: Duration = Duration::from_micros(50);

/// What a pass of the forwarding loop was, for the budget.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Pass {
    /// Forwarded at least one frame.
    Worked,
    /// Polled without blocking and found nothing.
    Polled,
    /// Blocked in epoll (the time asleep is nobody's cost).
    Slept,
}

#[derive(Debug)]
pub(super) struct Spin {
    floor: Duration,
    ceiling: Duration,
    budget_pct: u32,
    window: Duration,
    worked: Duration,
    polled: Duration,
    epoch_start: Instant,
}

impl Spin {
    pub(super) fn new(ceiling: Duration, budget_pct: u32, now: Instant) -> Self {
        let floor = SPIN_FLOOR.min(ceiling);
        Self {
            floor,
            ceiling,
            budget_pct,
            window: floor,
            worked: Duration::ZERO,
            polled: Duration::ZERO,
            epoch_start: now,
        }
    }

    /// True if the thread never polls.
    pub(super) fn is_off(&self) -> bool {
        self.ceiling.is_zero()
    }

    /// How long to poll after forwarding now.
    pub(super) fn window(&self) -> Duration {
        let allowed = self.worked.as_nanos() * u128::from(self.budget_pct) / 100;
        if self.polled.as_nanos() > allowed {
            self.floor
        } else {
            self.window
        }
    }

    /// A pass of `took` ended, having forwarded `frames`.
    pub(super) fn account(&mut self, pass: Pass, took: Duration, frames: u32, now: Instant) {
        match pass {
            Pass::Worked => self.worked += took.min(WORK_CREDIT_PER_FRAME * frames),
            Pass::Polled => self.polled += took,
            Pass::Slept => {}
        }
        if now.duration_since(self.epoch_start) >= EPOCH {
            self.epoch_start = now;
            self.worked /= 2;
            self.polled /= 2;
        }
    }

    /// The thread blocked and was woken by frames `gap` after it last forwarded
    /// (its poll window plus the time asleep).
    pub(super) fn woke_after(&mut self, gap: Duration) {
        self.window = if gap <= self.ceiling {
            gap.saturating_mul(2).max(self.window).min(self.ceiling)
        } else {
            (self.window / 2).max(self.floor)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    fn spin(ceiling: Duration) -> (Spin, Instant) {
        let now = Instant::now();
        (Spin::new(ceiling, 100, now), now)
    }

    #[test]
    fn starts_at_the_floor_and_grows_to_cover_short_gaps() {
        let (mut s, now) = spin(MS);
        assert_eq!(s.window(), SPIN_FLOOR);
        s.account(Pass::Worked, 10 * MS, 1000, now);
        s.woke_after(120 * US);
        assert_eq!(s.window(), 240 * US);
        s.woke_after(700 * US);
        assert_eq!(s.window(), MS, "capped at the ceiling");
    }

    #[test]
    fn long_sleeps_shrink_it_back_to_the_floor() {
        let (mut s, now) = spin(MS);
        s.account(Pass::Worked, 10 * MS, 1000, now);
        s.woke_after(400 * US);
        assert_eq!(s.window(), 800 * US);
        s.woke_after(2 * MS);
        assert_eq!(s.window(), 400 * US);
        for _ in 0..10 {
            s.woke_after(Duration::from_secs(1));
        }
        assert_eq!(s.window(), SPIN_FLOOR);
    }

    #[test]
    fn polling_beyond_the_budget_falls_back_to_the_floor() {
        let (mut s, now) = spin(MS);
        s.woke_after(500 * US);
        s.account(Pass::Worked, 100 * US, 10, now);
        s.account(Pass::Polled, 90 * US, 0, now);
        assert_eq!(s.window(), MS, "within budget");
        s.account(Pass::Polled, 20 * US, 0, now);
        assert_eq!(s.window(), SPIN_FLOOR, "polled more than worked");
        s.account(Pass::Worked, 50 * US, 10, now);
        assert_eq!(s.window(), MS, "work earns polling time back");
        s.account(Pass::Slept, Duration::from_secs(1), 0, now);
        assert_eq!(s.window(), MS, "sleep costs nothing");
    }

    #[test]
    fn the_budget_can_be_raised() {
        let now = Instant::now();
        let mut s = Spin::new(5 * MS, 10_000, now);
        s.woke_after(2 * MS);
        s.account(Pass::Worked, 20 * US, 1, now);
        s.account(Pass::Polled, 1900 * US, 0, now);
        assert_eq!(s.window(), 4 * MS);
    }

    #[test]
    fn a_long_pass_of_few_frames_earns_little_polling() {
        let (mut s, now) = spin(MS);
        s.woke_after(500 * US);
        // One broadcast to a thousand ports: 1.4 ms of work, one frame.
        s.account(Pass::Worked, 1400 * US, 1, now);
        assert_eq!(s.worked, WORK_CREDIT_PER_FRAME);
        s.account(Pass::Polled, 60 * US, 0, now);
        assert_eq!(s.window(), SPIN_FLOOR, "polled past the frame's credit");
    }

    #[test]
    fn counts_decay_each_epoch() {
        let (mut s, now) = spin(MS);
        s.account(Pass::Polled, 40 * MS, 0, now);
        s.account(Pass::Worked, 2 * MS, 1000, now + EPOCH);
        assert_eq!(s.polled, 20 * MS);
        assert_eq!(s.worked, MS);
    }

    #[test]
    fn zero_ceiling_never_polls() {
        let (mut s, _) = spin(Duration::ZERO);
        assert!(s.is_off());
        s.woke_after(US);
        assert_eq!(s.window(), Duration::ZERO);
    }
}
