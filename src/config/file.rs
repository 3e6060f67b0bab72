//! The TOML file (`--config`): the same settings as the flags. A key may be written kebab-case
//! (`log-cleaner-io-max-bytes-per-second`), snake_case, or with Kafka's dots, quoted
//! (`"log.cleaner.io.max.bytes.per.second" = 0`) or as TOML's nested keys (unquoted dots are
//! tables in TOML). Unknown keys and a setting given twice are errors, so typos stop the broker.

use super::declare::Declared;
use super::settings::{BrokerSettings, GroupSettings};
use std::path::Path;

/// What the file gave, by settings group.
#[derive(Debug, Default)]
pub struct FileSettings {
    pub broker: BrokerSettings,
    pub groups: GroupSettings,
}

pub fn read(path: &Path) -> Result<FileSettings, String> {
    let bad = |e: String| format!("config file {}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    parse(&text).map_err(bad)
}

pub fn parse(text: &str) -> Result<FileSettings, String> {
    let table = toml::from_str::<toml::Table>(text).map_err(|e| e.to_string())?;
    let mut flat = Vec::new();
    flatten(table, "", "", &mut flat);
    let mut broker = toml::Table::new();
    let mut groups = toml::Table::new();
    for (name, written, value) in flat {
        let snake = name.replace('-', "_");
        let known = |d: &[Declared]| d.iter().any(|s| s.name == snake);
        let into = if known(BrokerSettings::DECLARED) {
            &mut broker
        } else if known(GroupSettings::DECLARED) {
            &mut groups
        } else {
            return Err(format!("unknown key `{written}`"));
        };
        if into.insert(name.clone(), value).is_some() {
            return Err(format!("`{name}` is given twice (as `{written}` too)"));
        }
    }
    let broker = toml::Value::Table(broker)
        .try_into::<BrokerSettings>()
        .map_err(|e| e.to_string())?;
    let groups = toml::Value::Table(groups)
        .try_into::<GroupSettings>()
        .map_err(|e| e.to_string())?;
    Ok(FileSettings { broker, groups })
}

/// Every leaf of the file as (name in kebab-case, name as written, value). No setting's value
/// is a table, so a table is a dotted name's prefix (an empty one is left as an unknown key).
fn flatten(
    table: toml::Table,
    prefix: &str,
    written_prefix: &str,
    out: &mut Vec<(String, String, toml::Value)>,
) {
    for (key, value) in table {
        let name = format!("{prefix}{}", key.replace(['.', '_'], "-"));
        let written = format!("{written_prefix}{key}");
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => {
                flatten(inner, &format!("{name}-"), &format!("{written}."), out)
            }
            v => out.push((name, written, v)),
        }
    }
}
