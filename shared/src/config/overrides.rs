//! `--set key=value` overrides applied to the parsed TOML tree before deserialisation, so an override is
//! validated exactly like the same key written in the file.

/// Applies one `dotted.key=value` override. The value is parsed as a TOML value (numbers, booleans, arrays,
/// quoted strings); anything that does not parse is taken as a bare string. On error returns (field, message).
pub fn apply_override(root: &mut toml::Value, spec: &str) -> Result<(), (String, String)> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| {
        (
            spec.to_string(),
            "override must look like key=value, e.g. train.lr=3e-4".to_string(),
        )
    })?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err((key.to_string(), "empty key in override".to_string()));
    }
    let value = parse_value(raw.trim());
    let parts: Vec<&str> = key.split('.').collect();
    let (last, parents) = parts.split_last().expect("split yields at least one part");
    let mut node = root;
    for part in parents {
        let table = node
            .as_table_mut()
            .ok_or_else(|| (key.to_string(), format!("`{part}` is not a table")))?;
        node = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| (key.to_string(), "parent is not a table".to_string()))?;
    table.insert(last.to_string(), value);
    Ok(())
}

pub(super) fn parse_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}
