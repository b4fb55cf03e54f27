//! Standard Webhooks signatures (standardwebhooks.com): the secret is
//! `whsec_` and the base64 of its bytes; a signature is `v1,` and the base64
//! HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`; the
//! `webhook-signature` header lists one per valid secret, space-separated.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// Bytes of a generated secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A new secret: its bytes and how it is shown (`whsec_…`).
pub fn generate() -> (Vec<u8>, String) {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut bytes = vec![0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    let shown = format!("{PREFIX}{}", STANDARD.encode(&bytes));
    (bytes, shown)
}

/// The bytes of a `whsec_…` secret.
pub fn decode(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(PREFIX)?).ok()
}

/// One signature: `v1,<base64 HMAC-SHA256>`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per key.
pub fn header<'a>(
    keys: impl IntoIterator<Item = &'a [u8]>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    keys.into_iter()
        .map(|k| signature(k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signs_the_specification_example() {
        let key = decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secrets_decode_to_their_bytes() {
        let (bytes, shown) = generate();
        assert!(shown.starts_with("whsec_"));
        assert_eq!(decode(&shown), Some(bytes));
        assert_eq!(decode("nope"), None);
    }

    #[test]
    fn the_header_carries_one_signature_per_key() {
        let h = header([&b"a"[..], &b"b"[..]], "evt_1", 1, b"{}");
        let parts: Vec<_> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], signature(b"a", "evt_1", 1, b"{}"));
        assert_eq!(parts[1], signature(b"b", "evt_1", 1, b"{}"));
    }
}
