//! Request-head parsing and credential extraction on hostile bytes: never a panic, the limits
//! hold, and the protocol echoed back is never a bearer entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::OriginPolicy;
use wsgate::credentials::{BEARER_PROTOCOL_PREFIX, Carriers, select_protocol};
use wsgate::head::{MAX_HEAD_BYTES, RequestHead};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, len))) = RequestHead::parse(data) else { return };
    assert!(len <= MAX_HEAD_BYTES && len <= data.len());
    let carrier = match Carriers::default().find(&head) {
        Ok(Some(credential)) => {
            assert!(!credential.secret().is_empty());
            Some(credential.carrier())
        }
        Ok(None) | Err(_) => None,
    };
    let supported = ["chat".to_owned()];
    if let Some(protocol) = select_protocol(&head, &supported) {
        assert!(!protocol.starts_with(BEARER_PROTOCOL_PREFIX));
    }
    for policy in [OriginPolicy::SameOrigin, OriginPolicy::Any, OriginPolicy::List(vec!["http://a".into()])] {
        let _ = policy.check(&head, carrier);
    }
});
