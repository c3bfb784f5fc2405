//! Signed models end to end: a key pair from the trainer's `keygen`, a model exported and signed
//! by the trainer, loaded by the SDK trusting that key, and every way of getting it wrong refused
//! with its own error.

use std::path::PathBuf;

use mpox_e2e::{temp_dir, tiny_model};
use mpox_sdk::signature::{SIGNATURE_KEY, SIGNER_KEY};
use mpox_sdk::{Error, Screener, ScreenerOptions};
use mpox_trainer::keys;
use prost::Message;
use tract_onnx::pb;

struct Fixture {
    unsigned: PathBuf,
    signed: PathBuf,
    public: String,
    stranger: String,
}

fn fixture(name: &str) -> Fixture {
    let dir = temp_dir(name);
    let unsigned = dir.join("model.onnx");
    std::fs::write(&unsigned, tiny_model(32)).unwrap();
    let pair = keys::generate(&dir.join("release")).unwrap();
    let stranger = keys::generate(&dir.join("stranger")).unwrap().public_hex;
    let signed = dir.join("signed.onnx");
    let signer = keys::sign_file(&unsigned, &pair.secret, &signed).unwrap();
    assert_eq!(signer, pair.public_hex);
    Fixture {
        unsigned,
        signed,
        public: pair.public_hex,
        stranger,
    }
}

fn trusting(keys: &[&str]) -> ScreenerOptions {
    ScreenerOptions {
        trusted_keys: keys.iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    }
}

fn load(bytes: &[u8], keys: &[&str]) -> mpox_sdk::Result<Screener> {
    Screener::from_bytes(bytes, trusting(keys))
}

#[test]
fn a_signed_model_loads_under_its_key_and_screens_like_the_unsigned_one() {
    let f = fixture("sig-ok");
    let signed = Screener::from_path(&f.signed, trusting(&[&f.stranger, &f.public])).unwrap();
    assert_eq!(signed.info().signed_by.as_deref(), Some(f.public.as_str()));
    let plain = Screener::from_path(&f.unsigned, ScreenerOptions::default()).unwrap();
    assert_eq!(plain.info().signed_by, None);
    assert_eq!(signed.info().meta, plain.info().meta);
    let photo = mpox_e2e::jpeg(&mpox_e2e::photo(3, true, 96), 90);
    assert_eq!(
        signed.screen(&photo).unwrap().logits,
        plain.screen(&photo).unwrap().logits
    );
    // Upper-case keys with blanks around them, as pasted into an app's config, are accepted.
    let pasted = format!("  {}\n", f.public.to_uppercase());
    assert!(load(&std::fs::read(&f.signed).unwrap(), &[&pasted]).is_ok());
}

#[test]
fn unsigned_foreign_and_altered_models_are_refused_each_with_its_own_error() {
    let f = fixture("sig-bad");
    let signed = std::fs::read(&f.signed).unwrap();
    let unsigned = std::fs::read(&f.unsigned).unwrap();

    assert!(matches!(
        load(&unsigned, &[&f.public]),
        Err(Error::ModelUnsigned)
    ));
    match load(&signed, &[&f.stranger]) {
        Err(Error::ModelUntrustedSigner { signer, trusted }) => {
            assert_eq!((signer.as_str(), trusted), (f.public.as_str(), 1));
        }
        other => panic!("{other:?}"),
    }

    // Altered after signing, three ways: the operating point in the metadata, one byte of a
    // weight (the protobuf stays valid), and the signature entry removed but the signer kept.
    let mut proto = pb::ModelProto::decode(signed.as_slice()).unwrap();
    for p in &mut proto.metadata_props {
        if p.key == "threshold" {
            // Slightly lower, still inside the uncertain band: a valid model, not the signed one.
            let t: f64 = p.value.parse().unwrap();
            p.value = format!("{}", t - 0.001);
        }
    }
    let lowered_threshold = proto.encode_to_vec();

    let mut proto = pb::ModelProto::decode(signed.as_slice()).unwrap();
    let weights = proto
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.raw_data.len() >= 64)
        .expect("a weight tensor with raw data");
    weights.raw_data[17] ^= 0x01;
    let flipped_weight = proto.encode_to_vec();

    for (what, bytes) in [
        ("threshold", &lowered_threshold),
        ("weight", &flipped_weight),
    ] {
        match load(bytes, &[&f.public]) {
            Err(Error::ModelSignatureMismatch { signer }) => assert_eq!(signer, f.public),
            other => panic!("{what}: {other:?}"),
        }
        // Without trusted keys the same file loads: the check is the app's to ask for.
        assert!(load(bytes, &[]).is_ok(), "{what}");
    }

    let mut proto = pb::ModelProto::decode(signed.as_slice()).unwrap();
    proto.metadata_props.retain(|p| p.key != SIGNATURE_KEY);
    assert!(matches!(
        load(&proto.encode_to_vec(), &[&f.public]),
        Err(Error::ModelUnsigned)
    ));
    let mut proto = pb::ModelProto::decode(signed.as_slice()).unwrap();
    for p in &mut proto.metadata_props {
        if p.key == SIGNER_KEY {
            p.value = f.stranger.clone();
        }
    }
    assert!(matches!(
        load(&proto.encode_to_vec(), &[&f.public, &f.stranger]),
        Err(Error::ModelSignatureMismatch { .. })
    ));

    // A key that is not one is the caller's mistake, reported as such.
    for bad in ["", "xyz", &f.public[..40]] {
        assert!(
            matches!(load(&signed, &[bad]), Err(Error::InvalidOption { ref option, .. }) if option == "trusted_keys"),
            "{bad:?}"
        );
    }
}

#[test]
fn signing_in_place_replaces_the_file_atomically_and_resigning_changes_the_signer() {
    let f = fixture("sig-resign");
    let dir = f.signed.parent().unwrap().to_path_buf();
    let other = keys::generate(&dir.join("next")).unwrap();
    keys::sign_file(&f.signed, &other.secret, &f.signed).unwrap();
    let bytes = std::fs::read(&f.signed).unwrap();
    assert!(load(&bytes, &[&other.public_hex]).is_ok());
    assert!(matches!(
        load(&bytes, &[&f.public]),
        Err(Error::ModelUntrustedSigner { .. })
    ));
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A secret key file is never overwritten by a second keygen.
    assert!(keys::generate(&dir.join("next")).is_err());
}
