//! The config file: a TOML table per subcommand whose keys are flag names. Its values become
//! flags placed before the command line's own, so the command line wins (clap keeps the last).

use anyhow::{bail, Context, Result};

/// Inserts the config file's flags for the chosen subcommand after the subcommand's name.
pub fn expand(args: Vec<String>) -> Result<Vec<String>> {
    let Some(pos) = args.iter().position(|a| a == "--config" || a.starts_with("--config=")) else { return Ok(args) };
    let path = match args[pos].strip_prefix("--config=") {
        Some(p) => p.to_string(),
        None => args.get(pos + 1).cloned().context("--config needs a file")?,
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let table: toml::Table = text.parse().with_context(|| format!("parsing {path}"))?;
    // The subcommand is the first argument that is not the program, a flag or the config path.
    let mut i = 1;
    while i < args.len() && (args[i].starts_with('-') || (i == pos + 1 && !args[pos].contains('='))) {
        i += 1;
    }
    let Some(sub) = args.get(i) else { return Ok(args) };
    let Some(section) = table.get(sub) else { return Ok(args) };
    let Some(section) = section.as_table() else { bail!("[{sub}] in {path} is not a table") };
    let mut flags = Vec::new();
    for (key, value) in section {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => flags.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => flags.extend([flag, s.clone()]),
            toml::Value::Integer(n) => flags.extend([flag, n.to_string()]),
            toml::Value::Float(x) => flags.extend([flag, x.to_string()]),
            other => bail!("{key} in [{sub}] of {path}: unsupported value {other}"),
        }
    }
    let mut out = args[..=i].to_vec();
    out.extend(flags);
    out.extend_from_slice(&args[i + 1..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_come_before_the_command_line() {
        let dir = std::env::temp_dir().join(format!("rollup-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("c.toml");
        std::fs::write(&path, "[sequencer]\nlisten = \"0.0.0.0:1\"\nblock_batches = 2\n[prover]\nname = \"x\"\n")
            .expect("write");
        let p = path.to_str().expect("utf8").to_string();
        let args: Vec<String> =
            ["rollup", "--config", &p, "sequencer", "--listen", "127.0.0.1:9"].iter().map(|s| s.to_string()).collect();
        let out = expand(args).expect("expand");
        assert_eq!(out[3..], ["sequencer", "--block-batches", "2", "--listen", "0.0.0.0:1", "--listen", "127.0.0.1:9"]);
        std::fs::remove_dir_all(dir).ok();
    }
}
