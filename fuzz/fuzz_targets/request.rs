//! Whatever a client writes on the control socket, one line at a time, through the
//! daemon's decoder. Checks that it never panics, that every rejection carries a
//! JSON-RPC error code and serializes, and that every accepted request reads back
//! identically from the form switchctl would send it in; tunnel options that
//! parse read back the same from the options `show` prints for them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use switchd_proto::{code, decode_request, Request, TunnelConfig};

fuzz_target!(|line: &[u8]| {
    match decode_request(line) {
        Ok((id, request)) => {
            let encoded = serde_json::to_value(&request).expect("requests serialize");
            let method = encoded["method"].as_str().expect("a method name");
            assert!(Request::METHODS.contains(&method), "{method} not listed");
            let mut again = json!({"jsonrpc": "2.0", "id": id.clone(), "method": method});
            if let Some(params) = encoded.get("params") {
                again["params"] = params.clone();
            }
            let line = serde_json::to_vec(&again).expect("serializes");
            let (id2, request2) = decode_request(&line).expect("a re-encoded request decodes");
            assert_eq!(id, id2);
            assert_eq!(request, request2);
            if let Request::AddPort { options, .. } | Request::SetInterface { options, .. } =
                &request
            {
                if let Ok(tunnel) = TunnelConfig::from_options(options) {
                    assert_eq!(TunnelConfig::from_options(&tunnel.options()), Ok(tunnel));
                }
            }
        }
        Err(rejected) => {
            let known = [
                code::PARSE_ERROR,
                code::INVALID_REQUEST,
                code::METHOD_NOT_FOUND,
                code::INVALID_PARAMS,
            ];
            assert!(known.contains(&rejected.error.code), "{rejected:?}");
            assert!(!rejected.error.message.is_empty());
            let reply = json!({"jsonrpc": "2.0", "id": rejected.id, "error": rejected.error});
            let bytes = serde_json::to_vec(&reply).expect("replies serialize");
            let _: Value = serde_json::from_slice(&bytes).expect("replies parse");
        }
    }
});
