//! `base = "other.toml"`: a config extends another, table by table; each file's `data.source` is resolved
//! against the folder of the file that wrote it. A file (or a `model.kind=…` override) that turns the model
//! into another kind does not inherit the STORM-only factor-module options of what it extends: a baseline
//! built on the STORM small config gets no STORM pooling or reconstruction, while one that names them itself
//! is still refused by validation.

use std::path::{Path, PathBuf};

use super::resolve_source;
use crate::error::{Error, Result};

/// Top-level key naming the config a file extends.
pub(super) const BASE_KEY: &str = "base";
/// Longest chain of `base` configs followed (a longer one is almost surely a cycle).
const MAX_BASE_DEPTH: usize = 8;

/// The TOML tree of `path` with its `base` chain merged in and `data.source` made absolute relative to the
/// file that wrote it.
pub(super) fn load_tree(path: &Path, depth: usize) -> Result<toml::Value> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut value: toml::Value = toml::from_str(&text)
        .map_err(|e| Error::config(&origin, "<syntax>", e.message().to_string()))?;
    let dir = path.parent();
    if let Some(source) = value
        .get_mut("data")
        .and_then(|d| d.get_mut("source"))
        .filter(|s| s.is_str())
    {
        let resolved = resolve_source(source.as_str().unwrap_or_default(), dir);
        *source = toml::Value::String(resolved);
    }
    let Some(table) = value.as_table_mut() else {
        return Ok(value);
    };
    let Some(base) = table.remove(BASE_KEY) else {
        return Ok(value);
    };
    let Some(base) = base.as_str() else {
        return Err(Error::config(&origin, BASE_KEY, "must be a file name"));
    };
    if depth >= MAX_BASE_DEPTH {
        return Err(Error::config(
            &origin,
            BASE_KEY,
            format!("more than {MAX_BASE_DEPTH} nested base configs; is there a cycle?"),
        ));
    }
    let base_path = dir.map_or_else(|| PathBuf::from(base), |d| d.join(base));
    let mut merged = load_tree(&base_path, depth + 1)?;
    if let Some(kind) = model_kind(&value) {
        drop_storm_only_options_on_kind_change(&mut merged, kind);
    }
    merge_tree(&mut merged, value);
    Ok(merged)
}

/// STORM's factor-module options: meaningful for `model.kind = "storm"` only.
const STORM_ONLY_MODEL_KEYS: [&str; 2] = ["factor_pooling", "reconstruction"];
const STORM_KIND: &str = "storm";

/// `model.kind` as written in a tree (None when the tree does not set it).
fn model_kind(tree: &toml::Value) -> Option<&str> {
    tree.get("model")?.get("kind")?.as_str()
}

/// Removes the STORM-only options from `tree`'s model table when its model becomes `kind`, another kind than
/// the tree's own and not STORM.
pub(super) fn drop_storm_only_options_on_kind_change(tree: &mut toml::Value, kind: &str) {
    if kind == STORM_KIND || model_kind(tree) == Some(kind) {
        return;
    }
    if let Some(model) = tree.get_mut("model").and_then(|m| m.as_table_mut()) {
        for key in STORM_ONLY_MODEL_KEYS {
            model.remove(key);
        }
    }
}

/// The model kind an override `model.kind=X` sets, if it is one (its value read as any override's is).
pub(super) fn kind_override(spec: &str) -> Option<String> {
    let (key, raw) = spec.split_once('=')?;
    if key.trim() != "model.kind" {
        return None;
    }
    super::overrides::parse_value(raw.trim())
        .as_str()
        .map(str::to_owned)
}

/// Overlays `top` onto `base`: tables merge key by key, any other value replaces.
fn merge_tree(base: &mut toml::Value, top: toml::Value) {
    match (base, top) {
        (toml::Value::Table(b), toml::Value::Table(t)) => {
            for (key, value) in t {
                match b.get_mut(&key) {
                    Some(existing) => merge_tree(existing, value),
                    None => {
                        b.insert(key, value);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}
