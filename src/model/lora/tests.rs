//! Adapters written here against a tiny synthetic base GGUF: parsing,
//! every refusal before anything is written, and the file the engine gets.

use std::collections::HashMap;

use serde_json::json;

use super::*;

/// A base GGUF of `arch` with 2 heads of size 4 (2 kv heads), hidden 8:
/// q [8, 8], k [8, 8], v [8, 8], down [8, 6], one layer, no lm_head.
fn base(dir: &Path, arch: &str) -> PathBuf {
    let path = dir.join(format!("{arch}.gguf"));
    let z = |r: usize, c: usize| {
        QTensor::quantize(
            &Tensor::zeros((r, c), DType::F32, &Device::Cpu).unwrap(),
            GgmlDType::F32,
        )
        .unwrap()
    };
    let tensors = [
        ("blk.0.attn_q.weight", z(8, 8)),
        ("blk.0.attn_k.weight", z(8, 8)),
        ("blk.0.attn_v.weight", z(8, 8)),
        ("blk.0.ffn_down.weight", z(8, 6)),
    ];
    let meta = [
        (
            "general.architecture".to_string(),
            gguf_file::Value::String(arch.into()),
        ),
        (
            format!("{arch}.attention.head_count"),
            gguf_file::Value::U32(2),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            gguf_file::Value::U32(2),
        ),
    ];
    let meta: Vec<(&str, &gguf_file::Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut f = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut f, &meta, &tensors).unwrap();
    path
}

/// Rows counting up from `start`: row i is all `start + i`.
fn rows(r: usize, c: usize, start: f32) -> Tensor {
    let v: Vec<f32> = (0..r * c).map(|i| start + (i / c) as f32).collect();
    Tensor::from_vec(v, (r, c), &Device::Cpu).unwrap()
}

/// A PEFT adapter folder with `config` and `tensors` (PEFT names).
fn adapter(
    dir: &Path,
    name: &str,
    config: serde_json::Value,
    tensors: &[(&str, Tensor)],
) -> LoraUse {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(CONFIG_FILE), config.to_string()).unwrap();
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| {
            (
                format!("base_model.model.model.layers.0.{n}.weight"),
                t.clone(),
            )
        })
        .collect();
    candle_core::safetensors::save(&map, d.join(WEIGHTS_FILE)).unwrap();
    LoraUse::of(&LoraSpec {
        path: d,
        scale: 1.0,
    })
    .unwrap()
}

/// A q projection pair: `A` [r, 8] and `B` [8, r].
fn q(a: Tensor, b: Tensor) -> Vec<(&'static str, Tensor)> {
    vec![
        ("self_attn.q_proj.lora_A", a),
        ("self_attn.q_proj.lora_B", b),
    ]
}

fn config(r: usize, alpha: f64) -> serde_json::Value {
    json!({"peft_type": "LORA", "r": r, "lora_alpha": alpha,
           "target_modules": ["q_proj", "v_proj"], "bias": "none"})
}

fn read_back(path: &Path) -> (gguf_file::Content, std::fs::File) {
    let mut f = std::fs::File::open(path).unwrap();
    (gguf_file::Content::read(&mut f).unwrap(), f)
}

fn tensor(content: &gguf_file::Content, f: &mut std::fs::File, name: &str) -> Vec<Vec<f32>> {
    content
        .tensor(f, name, &Device::Cpu)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap()
        .to_vec2()
        .unwrap()
}

#[test]
fn specs_take_a_scale_after_the_last_colon_only_when_it_is_a_number() {
    let s: LoraSpec = "adapters/tone".parse().unwrap();
    assert_eq!((s.path, s.scale), (PathBuf::from("adapters/tone"), 1.0));
    let s: LoraSpec = "adapters/tone:0.5".parse().unwrap();
    assert_eq!((s.path, s.scale), (PathBuf::from("adapters/tone"), 0.5));
    let s: LoraSpec = r"C:\adapters\tone".parse().unwrap();
    assert_eq!(s.path, PathBuf::from(r"C:\adapters\tone"));
    for bad in ["", "a:-1", "a:NaN"] {
        let e = bad.parse::<LoraSpec>().unwrap_err().to_string();
        assert!(e.contains("PATH") || e.contains("scale"), "{bad}: {e}");
    }
}

#[test]
fn peft_names_map_to_the_gguf_tensors_they_adapt() {
    let t = |n: &str| gguf_target(n);
    assert_eq!(
        t("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"),
        Ok(("blk.3.attn_q.weight".into(), Half::A))
    );
    assert_eq!(
        t("base_model.model.model.layers.0.mlp.down_proj.lora_B.default.weight"),
        Ok(("blk.0.ffn_down.weight".into(), Half::B))
    );
    assert_eq!(
        t("base_model.model.lm_head.lora_B.weight"),
        Ok(("output.weight".into(), Half::B))
    );
    for (name, says) in [
        (
            "base_model.model.model.embed_tokens.lora_embedding_A",
            "embedding",
        ),
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
            "DoRA",
        ),
        (
            "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight",
            "qkv_proj",
        ),
        ("base_model.model.model.norm.weight", "not a LoRA matrix"),
    ] {
        let e = t(name).unwrap_err();
        assert!(e.contains(says), "{name}: {e}");
    }
}

#[test]
fn llama_rows_are_interleaved_per_head_like_the_converter() {
    let m = rows(8, 1, 0.0);
    let p = permute_rows(&m, 2).unwrap();
    let order: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(order, [0., 2., 1., 3., 4., 6., 5., 7.]);
    assert!(permute_rows(&rows(6, 1, 0.0), 2).is_err());
}

#[test]
fn the_written_file_has_scaled_b_permuted_for_q_only_and_stacks_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = base(dir.path(), "llama");
    // r = 2, alpha 4: scale 2.
    let one = adapter(
        dir.path(),
        "one",
        config(2, 4.0),
        &[
            ("self_attn.q_proj.lora_A", rows(2, 8, 1.0)),
            ("self_attn.q_proj.lora_B", rows(8, 2, 0.0)),
            ("self_attn.v_proj.lora_A", rows(2, 8, 1.0)),
            ("self_attn.v_proj.lora_B", rows(8, 2, 0.0)),
        ],
    );
    // r = 1, alpha 1, used at scale 0.5.
    let mut two = adapter(
        dir.path(),
        "two",
        config(1, 1.0),
        &[
            ("self_attn.q_proj.lora_A", rows(1, 8, 9.0)),
            ("self_attn.q_proj.lora_B", rows(8, 1, 10.0)),
        ],
    );
    two.scale = 0.5;
    let out = prepare(
        &[one.clone(), two.clone()],
        &base_path,
        &dir.path().join("cache"),
    )
    .unwrap();
    let (content, mut f) = read_back(&out);
    let text = |k: &str| content.metadata[k].to_string().unwrap().clone();
    assert_eq!(text("general.type"), "adapter");
    assert_eq!(text("adapter.type"), "lora");
    assert_eq!(text("general.architecture"), "llama");
    assert!(!content.metadata.contains_key("adapter.lora.alpha"));
    // q: ranks stacked (2 + 1), B rows permuted, each part scaled.
    let qa = tensor(&content, &mut f, "blk.0.attn_q.weight.lora_a");
    assert_eq!(qa.len(), 3);
    assert_eq!(qa[2][0], 9.0);
    let qb = tensor(&content, &mut f, "blk.0.attn_q.weight.lora_b");
    let firsts: Vec<f32> = qb.iter().map(|r| r[0]).collect();
    assert_eq!(firsts, [0., 4., 2., 6., 8., 12., 10., 14.]);
    let lasts: Vec<f32> = qb.iter().map(|r| r[2]).collect();
    assert_eq!(lasts, [5., 6., 5.5, 6.5, 7., 8., 7.5, 8.5]);
    // v: one adapter, unpermuted.
    let vb = tensor(&content, &mut f, "blk.0.attn_v.weight.lora_b");
    let firsts: Vec<f32> = vb.iter().map(|r| r[0]).collect();
    assert_eq!(firsts, [0., 2., 4., 6., 8., 10., 12., 14.]);
    // The same adapters again: the cached file.
    let again = prepare(&[one, two], &base_path, &dir.path().join("cache")).unwrap();
    assert_eq!(again, out);
}

#[test]
fn qwen2_deltas_are_not_permuted() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = base(dir.path(), "qwen2");
    let a = adapter(
        dir.path(),
        "a",
        config(1, 1.0),
        &q(rows(1, 8, 1.0), rows(8, 1, 0.0)),
    );
    let out = prepare(&[a], &base_path, &dir.path().join("cache")).unwrap();
    let (content, mut f) = read_back(&out);
    let qb = tensor(&content, &mut f, "blk.0.attn_q.weight.lora_b");
    let firsts: Vec<f32> = qb.iter().map(|r| r[0]).collect();
    assert_eq!(firsts, [0., 1., 2., 3., 4., 5., 6., 7.]);
}

#[test]
fn malformed_adapters_are_refused_naming_the_fault_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = base(dir.path(), "llama");
    let cache = dir.path().join("cache");
    type Case<'a> = (&'a str, serde_json::Value, Vec<(&'a str, Tensor)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "rank",
            config(4, 4.0),
            q(rows(2, 8, 0.0), rows(8, 2, 0.0)),
            "rank 2, but adapter_config.json says r = 4",
        ),
        (
            "missing",
            config(2, 2.0),
            vec![("self_attn.q_proj.lora_A", rows(2, 8, 0.0))],
            "no lora_B",
        ),
        (
            "shape",
            config(2, 2.0),
            q(rows(2, 5, 0.0), rows(8, 2, 0.0)),
            "is 8×5, but the base model's tensor is 8×8",
        ),
        ("tied", config(2, 2.0), vec![], "ties its output layer"),
        (
            "dora",
            json!({"r": 2, "lora_alpha": 2, "use_dora": true}),
            q(rows(2, 8, 0.0), rows(8, 2, 0.0)),
            "DoRA",
        ),
        (
            "saved",
            json!({"r": 2, "lora_alpha": 2, "modules_to_save": ["lm_head"]}),
            q(rows(2, 8, 0.0), rows(8, 2, 0.0)),
            "modules_to_save",
        ),
        (
            "norank",
            json!({"lora_alpha": 2}),
            q(rows(2, 8, 0.0), rows(8, 2, 0.0)),
            "no rank",
        ),
        (
            "pattern",
            json!({"r": 2, "lora_alpha": 2, "rank_pattern": {"q_proj": 4}}),
            q(rows(2, 8, 0.0), rows(8, 2, 0.0)),
            "rank_pattern",
        ),
    ];
    for (name, cfg, tensors, says) in cases {
        let use_ = if name == "tied" {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(CONFIG_FILE), cfg.to_string()).unwrap();
            let map: HashMap<String, Tensor> = [
                (
                    "base_model.model.lm_head.lora_A.weight".to_string(),
                    rows(2, 8, 0.0),
                ),
                (
                    "base_model.model.lm_head.lora_B.weight".to_string(),
                    rows(8, 2, 0.0),
                ),
            ]
            .into();
            candle_core::safetensors::save(&map, d.join(WEIGHTS_FILE)).unwrap();
            LoraUse::of(&LoraSpec {
                path: d,
                scale: 1.0,
            })
            .unwrap()
        } else {
            adapter(dir.path(), name, cfg, &tensors)
        };
        let e = prepare(&[use_], &base_path, &cache)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{name}: {e}");
    }
    assert!(!cache.exists() || std::fs::read_dir(&cache).unwrap().next().is_none());
}

#[test]
fn other_architectures_are_refused_by_name_with_the_alternative() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = base(dir.path(), "phi3");
    let a = adapter(
        dir.path(),
        "a",
        config(1, 1.0),
        &q(rows(1, 8, 1.0), rows(8, 1, 0.0)),
    );
    let e = prepare(&[a], &base_path, &dir.path().join("cache"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`phi3`") && e.contains("llama, qwen2") && e.contains("merge"),
        "{e}"
    );
}

#[test]
fn a_folder_without_the_peft_files_and_a_changed_adapter_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = LoraUse::of(&LoraSpec {
        path: dir.path().to_path_buf(),
        scale: 1.0,
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("adapter_config.json") && e.contains("not a PEFT adapter"),
        "{e}"
    );
    let a = adapter(
        dir.path(),
        "a",
        config(1, 1.0),
        &q(rows(1, 8, 1.0), rows(8, 1, 0.0)),
    );
    a.check_unchanged().unwrap();
    std::fs::write(
        PathBuf::from(&a.path).join(CONFIG_FILE),
        config(1, 2.0).to_string(),
    )
    .unwrap();
    let e = a.check_unchanged().unwrap_err().to_string();
    assert!(e.contains("changed since the run started"), "{e}");
    // Naming one of the two files names its folder.
    let by_file = LoraUse::of(&LoraSpec {
        path: PathBuf::from(&a.path).join(WEIGHTS_FILE),
        scale: 1.0,
    })
    .unwrap();
    assert_eq!(by_file.path, a.path);
}
