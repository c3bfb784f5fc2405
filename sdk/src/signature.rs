//! Ed25519 signatures of model files, so that an app which downloads model updates loads only
//! the models its maintainers signed.
//!
//! The signature lives inside the ONNX file, in two `metadata_props` entries
//! ([`SIGNATURE_KEY`], [`SIGNER_KEY`]), so a signed model stays one file that any ONNX tool still
//! opens. It covers the model's content: the protobuf encoding of the model with those two
//! entries removed. The SDK builds its network from exactly the decoded message whose encoding it
//! verified, so any change to what runs (weights, graph, metadata, operating point) breaks it.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};
use tract_onnx::pb;

use crate::error::{Error, Result};
use crate::screener::hex;

/// Metadata key holding the signature (128 hex digits).
pub const SIGNATURE_KEY: &str = "mpoxscreen.signature";
/// Metadata key holding the signer's public key (64 hex digits).
pub const SIGNER_KEY: &str = "mpoxscreen.signer";
/// Bytes in a secret key (an Ed25519 seed).
pub const SECRET_KEY_LEN: usize = 32;

// Signing a domain-separated digest rather than the raw model keeps a signature from ever being
// valid for another purpose, and avoids a second pass over tens of megabytes.
const DOMAIN: &[u8] = b"mpoxscreen model signature v1\0";

/// A public key an app trusts, parsed from its 64 hex digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey(VerifyingKey);

impl TrustedKey {
    /// Parses a public key written as 64 hex digits (any case, surrounding blanks ignored).
    pub fn from_hex(text: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidOption {
            option: "trusted_keys".into(),
            reason,
        };
        let bytes: [u8; 32] = unhex(text.trim())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad(format!("{text:?} is not 64 hex digits")))?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| bad(format!("{text:?} is not an Ed25519 public key")))
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex(self.0.as_bytes())
    }
}

/// The public key (64 lowercase hex digits) of a secret key.
pub fn public_key_hex(secret: &[u8; SECRET_KEY_LEN]) -> String {
    hex(SigningKey::from_bytes(secret).verifying_key().as_bytes())
}

/// Signs model bytes: returns the same model carrying a signature by `secret` (any earlier
/// signature is replaced).
pub fn sign_model(model: &[u8], secret: &[u8; SECRET_KEY_LEN]) -> Result<Vec<u8>> {
    let mut proto = decode(model)?;
    strip(&mut proto);
    let key = SigningKey::from_bytes(secret);
    let signature = key.sign(&message(&proto));
    proto.metadata_props.push(pb::StringStringEntryProto {
        key: SIGNATURE_KEY.into(),
        value: hex(&signature.to_bytes()),
    });
    proto.metadata_props.push(pb::StringStringEntryProto {
        key: SIGNER_KEY.into(),
        value: hex(key.verifying_key().as_bytes()),
    });
    Ok(proto.encode_to_vec())
}

/// Removes the signature entries from a decoded model and checks them against `trusted`: returns
/// the signer's key (hex) when one of the trusted keys signed exactly this content. With no
/// trusted keys nothing is checked and `None` is returned.
pub(crate) fn verify(proto: &mut pb::ModelProto, trusted: &[TrustedKey]) -> Result<Option<String>> {
    let signature = take(proto, SIGNATURE_KEY);
    let signer = take(proto, SIGNER_KEY);
    if trusted.is_empty() {
        return Ok(None);
    }
    let (Some(signature), Some(signer)) = (signature, signer) else {
        return Err(Error::ModelUnsigned);
    };
    let key = trusted
        .iter()
        .find(|k| k.to_hex().eq_ignore_ascii_case(signer.trim()))
        .ok_or_else(|| Error::ModelUntrustedSigner {
            signer: shorten(&signer),
            trusted: trusted.len(),
        })?;
    let mismatch = || Error::ModelSignatureMismatch {
        signer: key.to_hex(),
    };
    let bytes: [u8; 64] = unhex(signature.trim())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(mismatch)?;
    key.0
        .verify_strict(&message(proto), &Signature::from_bytes(&bytes))
        .map_err(|_| mismatch())?;
    Ok(Some(key.to_hex()))
}

/// Decodes model bytes as an ONNX protobuf message.
fn decode(bytes: &[u8]) -> Result<pb::ModelProto> {
    pb::ModelProto::decode(bytes).map_err(|e| Error::ModelDecode {
        reason: e.to_string(),
    })
}

/// Removes every signature entry, so that signing twice signs the content, not an old signature.
fn strip(proto: &mut pb::ModelProto) {
    proto
        .metadata_props
        .retain(|p| p.key != SIGNATURE_KEY && p.key != SIGNER_KEY);
}

/// Removes the entries under `key` and returns the last one's value (a file may repeat a key; all
/// are removed so that none is left outside what the signature covers).
fn take(proto: &mut pb::ModelProto, key: &str) -> Option<String> {
    let mut value = None;
    proto.metadata_props.retain(|p| {
        if p.key == key {
            value = Some(p.value.clone());
            false
        } else {
            true
        }
    });
    value
}

/// What is signed: the domain tag and the sha256 of the model encoded without its signature.
fn message(proto: &pb::ModelProto) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&Sha256::digest(proto.encode_to_vec()));
    m
}

/// Bytes of a hex string, or `None` if it is not one.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// At most 64 characters of an untrusted value, for error messages.
fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Vec<u8> {
        pb::ModelProto {
            ir_version: 8,
            producer_name: "test".into(),
            metadata_props: vec![pb::StringStringEntryProto {
                key: "threshold".into(),
                value: "0.5".into(),
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn check(bytes: &[u8], trusted: &[TrustedKey]) -> Result<Option<String>> {
        verify(&mut decode(bytes).unwrap(), trusted)
    }

    const A: [u8; 32] = [7; 32];
    const B: [u8; 32] = [9; 32];

    fn key(secret: &[u8; 32]) -> TrustedKey {
        TrustedKey::from_hex(&public_key_hex(secret)).unwrap()
    }

    #[test]
    fn a_signed_model_verifies_under_its_key_only() {
        let signed = sign_model(&model(), &A).unwrap();
        assert_eq!(check(&signed, &[key(&A)]).unwrap(), Some(key(&A).to_hex()));
        assert_eq!(
            check(&signed, &[key(&B), key(&A)]).unwrap(),
            Some(key(&A).to_hex())
        );
        assert!(matches!(
            check(&signed, &[key(&B)]),
            Err(Error::ModelUntrustedSigner { trusted: 1, .. })
        ));
        assert!(matches!(
            check(&model(), &[key(&A)]),
            Err(Error::ModelUnsigned)
        ));
        assert_eq!(check(&model(), &[]).unwrap(), None);
    }

    #[test]
    fn an_altered_model_or_signature_is_refused() {
        let signed = sign_model(&model(), &A).unwrap();
        let mut proto = decode(&signed).unwrap();
        for p in &mut proto.metadata_props {
            if p.key == "threshold" {
                p.value = "0.1".into();
            }
        }
        let altered = proto.encode_to_vec();
        assert!(matches!(
            check(&altered, &[key(&A)]),
            Err(Error::ModelSignatureMismatch { .. })
        ));
        let mut proto = decode(&signed).unwrap();
        for p in &mut proto.metadata_props {
            if p.key == SIGNATURE_KEY {
                p.value = p.value.replace('a', "b").replace('0', "1");
            }
        }
        assert!(matches!(
            check(&proto.encode_to_vec(), &[key(&A)]),
            Err(Error::ModelSignatureMismatch { .. })
        ));
        // A signature copied from another model signed by the same key does not transfer.
        let mut other = decode(&model()).unwrap();
        other.producer_name = "someone else".into();
        let mut forged = decode(&sign_model(&other.encode_to_vec(), &A).unwrap()).unwrap();
        strip(&mut forged);
        forged.metadata_props.extend(
            decode(&signed)
                .unwrap()
                .metadata_props
                .into_iter()
                .filter(|p| p.key == SIGNATURE_KEY || p.key == SIGNER_KEY),
        );
        assert!(matches!(
            check(&forged.encode_to_vec(), &[key(&A)]),
            Err(Error::ModelSignatureMismatch { .. })
        ));
    }

    #[test]
    fn signing_again_replaces_the_old_signature() {
        let once = sign_model(&model(), &A).unwrap();
        let twice = sign_model(&once, &B).unwrap();
        let proto = decode(&twice).unwrap();
        let entries = proto
            .metadata_props
            .iter()
            .filter(|p| p.key == SIGNATURE_KEY || p.key == SIGNER_KEY)
            .count();
        assert_eq!(entries, 2);
        assert!(check(&twice, &[key(&B)]).is_ok());
        assert!(matches!(
            check(&twice, &[key(&A)]),
            Err(Error::ModelUntrustedSigner { .. })
        ));
    }

    #[test]
    fn public_keys_are_parsed_strictly() {
        let hex = public_key_hex(&A);
        assert_eq!(TrustedKey::from_hex(&hex.to_uppercase()).unwrap(), key(&A));
        assert_eq!(TrustedKey::from_hex(&format!(" {hex}\n")).unwrap(), key(&A));
        for bad in ["", "abc", &hex[..62], &format!("{hex}00"), &"zz".repeat(32)] {
            assert!(
                matches!(TrustedKey::from_hex(bad), Err(Error::InvalidOption { ref option, .. }) if option == "trusted_keys"),
                "{bad:?}"
            );
        }
    }
}
