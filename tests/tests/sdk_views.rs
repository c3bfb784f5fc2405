//! Test-time views: one view is the plain screening, bit for bit; several views average exactly
//! the logits of the views `Preprocessing::views` makes; counts come from the options or the file.

use std::sync::OnceLock;

use image::RgbImage;
use mpox_e2e::{photo, tiny_model};
use mpox_sdk::contract::keys;
use mpox_sdk::{softmax, Error, Screener, ScreenerOptions};
use prost::Message;
use tract_onnx::pb;

const SIZE: u32 = 96;

fn model_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| tiny_model(SIZE))
}

fn with_views(bytes: &[u8], views: Option<u32>) -> mpox_sdk::Result<Screener> {
    Screener::from_bytes(
        bytes,
        ScreenerOptions {
            views,
            heatmap: true,
            ..Default::default()
        },
    )
}

/// A photo that is neither square nor symmetric, so that every view differs.
fn asymmetric_photo(seed: u64) -> RgbImage {
    let p = photo(seed, true, 200);
    image::imageops::crop_imm(&p, 0, 20, 200, 150).to_image()
}

#[test]
fn one_view_is_the_plain_screening_bit_for_bit() {
    let plain = with_views(model_bytes(), None).unwrap();
    let one = with_views(model_bytes(), Some(1)).unwrap();
    assert_eq!((plain.views(), one.views()), (1, 1));
    let pre = &one.info().meta.preprocessing;
    for seed in 0..3 {
        let img = asymmetric_photo(seed);
        let s = one.screen_image(&img).unwrap();
        // The evaluation transform and the one-image run, as screening was before views existed.
        let raw = one.infer(&pre.tensor(&img)).unwrap();
        assert_eq!(s.logits, raw.logits);
        assert_eq!(
            s.probabilities
                .iter()
                .map(|c| c.probability)
                .collect::<Vec<_>>(),
            softmax(&raw.logits, one.info().meta.temperature)
        );
        assert_eq!(one.infer_views(&pre.tensor(&img)).unwrap(), raw);
        let p = plain.screen_image(&img).unwrap();
        assert_eq!((p.logits, p.heatmap), (s.logits, s.heatmap));
    }
}

#[test]
fn several_views_average_exactly_the_views_they_name() {
    let one = with_views(model_bytes(), Some(1)).unwrap();
    let meta = &one.info().meta;
    let pre = &meta.preprocessing;
    let img = asymmetric_photo(7);
    let single = one.screen_image(&img).unwrap();
    for n in [2, 4, 8] {
        let tta = with_views(model_bytes(), Some(n)).unwrap();
        assert_eq!(tta.views(), n);
        let s = tta.screen_image(&img).unwrap();
        let views = pre.views(&img, n).unwrap();
        assert_eq!(views.len(), n as usize);
        let per_view: Vec<Vec<f32>> = views
            .iter()
            .map(|v| one.infer(&pre.normalize(v)).unwrap().logits)
            .collect();
        let mean: Vec<f32> = (0..meta.labels.len())
            .map(|c| per_view.iter().map(|l| l[c]).sum::<f32>() / n as f32)
            .collect();
        let worst = s
            .logits
            .iter()
            .zip(&mean)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("{n} views: |TTA logits - mean of the views' logits| <= {worst:.2e}");
        for (got, want) in s.logits.iter().zip(&mean) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{n} views: logits {:?}, mean of the views {mean:?}",
                s.logits
            );
        }
        // `infer_views` on the shared views tensor is what `screen` does, bit for bit.
        let batch = tta
            .infer_views(&pre.views_tensor(&img, n).unwrap())
            .unwrap();
        assert_eq!(batch.logits, s.logits);
        assert_eq!(
            s.probabilities
                .iter()
                .map(|c| c.probability)
                .collect::<Vec<_>>(),
            softmax(&s.logits, meta.temperature)
        );
        // The views do change the answer on an asymmetric photo.
        assert_ne!(s.logits, single.logits, "{n} views");
        // The heatmap is the centre view's: the one-view heatmap.
        assert_eq!(s.heatmap, single.heatmap, "{n} views");
        // The input of a batch is checked, not trusted.
        assert!(matches!(
            tta.infer_views(&pre.tensor(&img)),
            Err(Error::Inference { .. })
        ));
    }
}

#[test]
fn other_view_counts_are_a_typed_error() {
    for n in [0, 3, 5, 7, 16] {
        match with_views(model_bytes(), Some(n)) {
            Err(Error::InvalidOption { option, reason }) => {
                assert_eq!(option, "views");
                assert!(reason.contains("[1, 2, 4, 8]"), "{reason}");
            }
            other => panic!("{n} views: {other:?}"),
        }
    }
}

/// The model file with `mpoxscreen.views` set to `value`, or removed when `None`.
fn file_with_views(value: Option<&str>) -> Vec<u8> {
    let mut p = pb::ModelProto::decode(model_bytes()).unwrap();
    p.metadata_props.retain(|e| e.key != keys::VIEWS);
    if let Some(value) = value {
        p.metadata_props.push(pb::StringStringEntryProto {
            key: keys::VIEWS.into(),
            value: value.into(),
        });
    }
    p.encode_to_vec()
}

#[test]
fn the_file_recommends_the_view_count() {
    let written = pb::ModelProto::decode(model_bytes()).unwrap();
    let entry = written.metadata_props.iter().find(|e| e.key == keys::VIEWS);
    assert_eq!(entry.map(|e| e.value.as_str()), Some("1"));

    let img = asymmetric_photo(3);
    let four = file_with_views(Some("4"));
    let recommended = with_views(&four, None).unwrap();
    assert_eq!(recommended.views(), 4);
    assert_eq!(recommended.info().meta.recommended_views, 4);
    let asked = with_views(model_bytes(), Some(4)).unwrap();
    assert_eq!(
        recommended.screen_image(&img).unwrap().logits,
        asked.screen_image(&img).unwrap().logits
    );
    // The caller's option wins over the file.
    let overridden = with_views(&four, Some(1)).unwrap();
    assert_eq!(overridden.views(), 1);
    let one = with_views(model_bytes(), Some(1)).unwrap();
    assert_eq!(
        overridden.screen_image(&img).unwrap().logits,
        one.screen_image(&img).unwrap().logits
    );

    // Files written before the key existed mean one view.
    let old = with_views(&file_with_views(None), None).unwrap();
    assert_eq!((old.views(), old.info().meta.recommended_views), (1, 1));

    for bad in ["3", "0", "-4", "four", ""] {
        match with_views(&file_with_views(Some(bad)), None) {
            Err(Error::ModelMetadata { key, .. }) => assert_eq!(key, keys::VIEWS),
            other => panic!("mpoxscreen.views={bad:?}: {other:?}"),
        }
    }
}
