//! `trace`: the frame a user describes, put through the datapath's own
//! decision on copies of the bridge's tables (`datapath::trace`), told back in
//! steps with port names, as `ovs-appctl ofproto/trace` tells a flow.

use super::switch::{err, RpcResult, Switch};
use crate::datapath::trace::{Learn, Lookup};
use crate::wire::MacAddr;
use switchd_proto::{code, TraceReply, VlanConfig, VlanMode};

/// `trace`'s fields, as the request gave them.
pub(super) struct TraceFields {
    pub(super) dl_src: Option<String>,
    pub(super) dl_dst: Option<String>,
    pub(super) dl_vlan: Option<u16>,
    pub(super) dl_type: Option<String>,
}

fn mac(field: &str, value: Option<&str>) -> RpcResult<MacAddr> {
    match value {
        None => Ok(MacAddr([0; 6])),
        Some(v) => v.parse().map_err(|_| {
            err(
                code::INVALID_PARAMS,
                format!("{field}: {v:?} is not a MAC address (like 02:00:00:00:00:01)"),
            )
        }),
    }
}

fn ethertype(value: Option<&str>) -> RpcResult<u16> {
    let Some(v) = value else { return Ok(0) };
    let parsed = match v.to_ascii_lowercase().as_str() {
        "ip" => Ok(0x0800),
        "arp" => Ok(0x0806),
        "ipv6" => Ok(0x86dd),
        other => match other.strip_prefix("0x") {
            Some(hex) => u16::from_str_radix(hex, 16),
            None => other.parse(),
        },
    };
    parsed.map_err(|_| {
        err(
            code::INVALID_PARAMS,
            format!("dl_type: {v:?} is not an ethertype (0x0800, 2054, ip, arp, ipv6)"),
        )
    })
}

/// A port's VLAN settings in a few words.
fn vlan_words(vlan: &VlanConfig) -> String {
    let trunks = |t: &[u16]| {
        if t.is_empty() {
            "all VLANs".to_string()
        } else {
            format!("VLANs {t:?}")
        }
    };
    match (vlan.mode(), vlan.tag) {
        (VlanMode::Access, Some(tag)) => format!("access port of VLAN {tag}"),
        (VlanMode::Trunk, _) if vlan == &VlanConfig::default() => {
            "no VLAN settings: trunk of all VLANs, untagged is VLAN 0".to_string()
        }
        (VlanMode::Trunk, _) => format!("trunk of {}", trunks(&vlan.trunks)),
        (mode, tag) => format!(
            "{} port, native VLAN {}, trunk of {}",
            mode.as_str(),
            tag.unwrap_or(0),
            trunks(&vlan.trunks)
        ),
    }
}

impl Switch {
    pub(super) fn trace(
        &self,
        bridge: &str,
        in_port: &str,
        fields: TraceFields,
    ) -> RpcResult<TraceReply> {
        let running = self.bridge(bridge)?;
        let Some(state) = running.ports.get(in_port) else {
            return Err(err(
                code::NOT_FOUND,
                format!("bridge {bridge} does not have a port {in_port}"),
            ));
        };
        let Some(port) = state.port() else {
            return Err(err(
                code::FAILED,
                format!("port {in_port} is not attached: it receives nothing (see show)"),
            ));
        };
        let src = mac("dl_src", fields.dl_src.as_deref())?;
        let dst = mac("dl_dst", fields.dl_dst.as_deref())?;
        let ether = ethertype(fields.dl_type.as_deref())?;
        if let Some(v) = fields.dl_vlan.filter(|&v| v > 4095) {
            return Err(err(
                code::INVALID_PARAMS,
                format!("dl_vlan: {v} is not a VLAN id (0 to 4095)"),
            ));
        }
        let mut frame = Vec::with_capacity(64);
        frame.extend_from_slice(&dst.0);
        frame.extend_from_slice(&src.0);
        if let Some(v) = fields.dl_vlan {
            frame.extend_from_slice(&[0x81, 0x00]);
            frame.extend_from_slice(&v.to_be_bytes());
        }
        frame.extend_from_slice(&ether.to_be_bytes());
        frame.resize(frame.len().max(60), 0);

        let (traced, kernel) = self
            .datapath
            .trace(bridge, port.id, &frame)
            .ok_or_else(|| err(code::NOT_FOUND, format!("no bridge named {bridge}")))?;
        let names = running.port_names();
        let name = |id: u32| names.get(&id).copied().unwrap_or("(a port being removed)");
        let port_vlan = |p: &str| {
            self.port_config(bridge, p)
                .map(|c| vlan_words(&c.vlan))
                .unwrap_or_default()
        };
        let mut flow = format!("in_port={in_port}");
        if let Some(v) = fields.dl_vlan {
            flow.push_str(&format!(",dl_vlan={v}"));
        }
        flow.push_str(&format!(",dl_src={src},dl_dst={dst},dl_type={ether:#06x}"));
        let mut reply = TraceReply {
            bridge: bridge.to_string(),
            flow,
            steps: Vec::new(),
            vlan: None,
            output_ports: traced
                .outputs
                .iter()
                .map(|o| name(o.port).to_string())
                .collect(),
            datapath: None,
            drop: None,
            mirrors: Vec::new(),
        };
        let received = match fields.dl_vlan {
            None => "untagged".to_string(),
            Some(v) => format!("tagged {v}"),
        };
        let output_of = self.db.bridges.get(bridge).and_then(|c| {
            c.mirrors
                .iter()
                .find(|m| m.output_port.as_deref() == Some(in_port))
        });
        if let Some(m) = output_of {
            reply.steps.push(format!(
                "ingress: {in_port} is mirror {}'s output port, which takes no part in \
                 switching: dropped",
                m.name
            ));
            reply.output_ports.clear();
            reply.drop = Some("mirror-output".to_string());
            return Ok(reply);
        }
        let vlan = match traced.vlan {
            Err(why) => {
                reply.steps.push(format!(
                    "ingress: {in_port} ({}): {received}: {}",
                    port_vlan(in_port),
                    why.as_str()
                ));
                reply.drop = Some(why.as_str().to_string());
                return Ok(reply);
            }
            Ok(vlan) => vlan,
        };
        reply.vlan = Some(vlan);
        reply.steps.push(format!(
            "ingress: {in_port} ({}): {received}: VLAN {vlan}",
            port_vlan(in_port)
        ));
        reply.steps.push(format!(
            "learn: {src} in VLAN {vlan} on {in_port}: {}",
            match traced.learn {
                Some(Learn::New) => "new entry".to_string(),
                Some(Learn::Refresh) => "already there, its age starts again".to_string(),
                Some(Learn::Moved { from }) => format!("moves from {}", name(from)),
                Some(Learn::KeptStatic { on }) => {
                    format!("a static entry keeps it on {} (not learned)", name(on))
                }
                None => String::new(),
            }
        ));
        reply.steps.push(format!(
            "lookup: {dst} in VLAN {vlan}: {}",
            match traced.lookup {
                Some(Lookup::Hit { port, age_ms }) => match age_ms {
                    Some(ms) => format!("hit on {} (age {} s)", name(port), ms / 1000),
                    None => format!("static entry on {}", name(port)),
                },
                Some(Lookup::BehindIngress) => {
                    format!("behind {in_port} itself: not forwarded")
                }
                Some(Lookup::Unusable { port }) => format!(
                    "an entry on {}, which does not carry VLAN {vlan}: flood",
                    name(port)
                ),
                Some(Lookup::Miss) => "miss: flood to the ports carrying the VLAN".to_string(),
                Some(Lookup::Group) => {
                    "group address: flood to the ports carrying the VLAN (IP multicast as \
                     snooping says, mdb-show)"
                        .to_string()
                }
                None => String::new(),
            }
        ));
        let mirrors = self.mirrors_of(bridge, in_port, &reply.output_ports, vlan);
        if traced.outputs.is_empty() {
            let why = match traced.lookup {
                Some(Lookup::BehindIngress) => "the destination is behind the ingress port",
                _ => "no other port carries the VLAN",
            };
            reply.steps.push(format!("egress: none: {why}"));
            reply.drop = Some(why.to_string());
            for (name, step) in mirrors {
                reply.steps.push(step);
                reply.mirrors.push(name);
            }
            return Ok(reply);
        }
        for o in &traced.outputs {
            let p = name(o.port);
            let how = match o.tagged {
                true => format!("tagged {vlan}"),
                false => "untagged".to_string(),
            };
            reply
                .steps
                .push(format!("egress: {p} ({}): {how}", port_vlan(p)));
        }
        for (name, step) in mirrors {
            reply.steps.push(step);
            reply.mirrors.push(name);
        }
        let unicast_hit = matches!(traced.lookup, Some(Lookup::Hit { .. }));
        let (datapath, why) = if !unicast_hit {
            (
                "userspace",
                "flooded frames go through the userspace datapath",
            )
        } else if !kernel {
            (
                "userspace",
                "the kernel fast path is off, or not on both ports (--offload none, a TAP, a mirror naming a port, a program that failed to load)",
            )
        } else if traced.retagged {
            (
                "userspace",
                "a priority-tagged frame is retagged in userspace",
            )
        } else if traced.learn != Some(Learn::Refresh) {
            (
                "userspace",
                "this first frame, since its source is not yet learned on this port; the ones after it take the kernel fast path",
            )
        } else {
            ("kernel", "known unicast between learned addresses: the TC program on the ingress port redirects it")
        };
        reply.steps.push(format!("datapath: {datapath}: {why}"));
        reply.datapath = Some(datapath.to_string());
        Ok(reply)
    }
}

impl Switch {
    /// The bridge's mirrors that would copy a frame of `vlan` received on
    /// `in_port` and sent to `outputs`, each with a step saying where.
    fn mirrors_of(
        &self,
        bridge: &str,
        in_port: &str,
        outputs: &[String],
        vlan: u16,
    ) -> Vec<(String, String)> {
        let (Some(config), Some(running)) = (self.db.bridges.get(bridge), self.bridges.get(bridge))
        else {
            return Vec::new();
        };
        let attached = |p: &String| running.ports.get(p).is_some_and(|s| s.port().is_some());
        config
            .mirrors
            .iter()
            // One whose output port is not running copies nothing meanwhile.
            .filter(|m| m.output_port.as_ref().is_none_or(attached))
            .filter(|m| {
                (m.select_all
                    || m.select_src_port.iter().any(|p| p == in_port)
                    || outputs.iter().any(|o| m.select_dst_port.contains(o)))
                    && (m.select_vlan.is_empty() || m.select_vlan.contains(&vlan))
            })
            .map(|m| {
                let to = match (&m.output_port, m.output_vlan) {
                    (Some(p), _) if vlan == 0 => format!("a copy to {p}, untagged"),
                    (Some(p), _) => format!("a copy to {p}, tagged {vlan}"),
                    (None, Some(v)) => format!("a copy into VLAN {v}"),
                    (None, None) => "nothing".to_string(),
                };
                (m.name.clone(), format!("mirror {}: {to}", m.name))
            })
            .collect()
    }
}
