//! The appliance's settings file (`lookout/settings.toml` on the boot
//! partition, or `lookout --config FILE`): every long option of `lookout
//! --help` under its own name (`max-viewers = 6`), command-line flags and
//! their environment variables winning over it. The same code reads it in
//! `lookout` and checks it in `lookout-provision write-image --settings`,
//! which is why it lives in this crate (the appliance depends on it, not
//! the other way round).
//!
//! Nothing here lists the options: the file is read against a clap
//! [`clap::Command`] (in `lookout`, its own command line; in
//! `lookout-provision`, [`appliance_command`], built from
//! `appliance-options.txt`, which a test of the appliance keeps equal to
//! `lookout`'s command line), so a new flag is settable in the file the day
//! it is added. Each accepted key becomes `--key=value` on a synthetic command line
//! placed before the real one, and the whole is parsed by clap as usual, so
//! the file's values go through exactly the value parsers the flags use.
//!
//! A problem in the file never stops the camera (it may sit on a shelf with
//! nobody at a terminal): an unknown key or a value clap or the cross-flag
//! check refuses is left out, with a [`SettingsProblem`] naming the file,
//! line and key, and that key keeps its default. A file that is not valid
//! TOML is ignored as a whole, reported the same way.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};

/// The settings file's name, in the boot partition's `lookout/` folder
/// (beside `identity.json`).
pub const FILE_NAME: &str = "settings.toml";

/// Options that are not settings: the file cannot name another file, and
/// help and version are not options of a running camera.
const NOT_SETTINGS: &[&str] = &["config", "help", "version", "show-settings"];

/// One thing wrong with a settings file. `line` and `key` are `None` for a
/// file that could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{}{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), key.as_ref().map(|k| format!(": {k}")).unwrap_or_default())]
pub struct SettingsProblem {
    pub file: PathBuf,
    /// 1-based line of the key (or of the syntax error).
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

/// What a settings file did to the command line.
#[derive(Debug)]
pub struct Applied {
    /// The options: file, then command line on top (where each value came from).
    pub matches: ArgMatches,
    /// The keys taken from the file.
    pub from_file: Vec<String>,
    pub problems: Vec<SettingsProblem>,
}

/// The long names that may appear in a settings file, in `--help` order.
pub fn settable_keys(command: &Command) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| !NOT_SETTINGS.contains(long))
        .map(str::to_owned)
        .collect()
}

/// Reads `path` and applies it under `command_line` (the process's
/// arguments, program name first), both read against `command`. `check` is
/// the cross-option check (`lookout`'s `Cli::check`); a file value that
/// makes it fail is refused like a bad value. Errors of the command line
/// itself are clap's, returned as they are (a person typed them).
pub fn apply_file(
    command: &Command,
    command_line: &[OsString],
    path: &Path,
    check: impl Fn(&ArgMatches) -> Result<(), String>,
) -> Result<Applied, clap::Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => apply_text(command, command_line, path, &text, check),
        Err(e) => {
            let mut applied = apply_text(command, command_line, path, "", check)?;
            applied.problems.push(SettingsProblem {
                file: path.to_owned(),
                line: None,
                key: None,
                message: format!("cannot read the settings file ({e}); every setting keeps its default"),
            });
            Ok(applied)
        }
    }
}

/// [`apply_file`] on text already read (`path` only names it).
pub fn apply_text(
    command: &Command,
    command_line: &[OsString],
    path: &Path,
    text: &str,
    check: impl Fn(&ArgMatches) -> Result<(), String>,
) -> Result<Applied, clap::Error> {
    let given = command.clone().try_get_matches_from(command_line)?;
    let problem = |line: Option<usize>, key: Option<&str>, message: String| SettingsProblem {
        file: path.to_owned(),
        line,
        key: key.map(str::to_owned),
        message,
    };
    let mut problems = Vec::new();
    let mut accepted: Vec<OsString> = Vec::new();
    // Whether the command line with the file's accepted keys passes `check`
    // (a bad command line alone may not; the file is not blamed for that).
    let mut accepted_pass = check(&given).is_ok();
    let mut from_file = Vec::new();
    for entry in entries(text) {
        let (line, key, value) = match entry {
            Ok(entry) => entry,
            Err((line, message)) => {
                problems.push(problem(
                    line,
                    None,
                    format!("{message}; the whole file is ignored, every setting keeps its default"),
                ));
                break;
            }
        };
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .filter(|_| !NOT_SETTINGS.contains(&key.as_str()))
        else {
            problems.push(problem(Some(line), Some(&key), unknown_key_message(command, &key)));
            continue;
        };
        if matches!(
            given.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            // The command line (or the flag's environment variable) sets it.
            continue;
        }
        let flags = match as_flags(&key, arg.get_action(), value) {
            Ok(flags) => flags,
            Err(message) => {
                problems.push(problem(Some(line), Some(&key), message));
                continue;
            }
        };
        let mut candidate = accepted.clone();
        candidate.extend(flags);
        match parse(command, command_line, &candidate) {
            Err(e) => problems.push(problem(
                Some(line),
                Some(&key),
                format!("{}; the default is used", clap_message(&e)),
            )),
            Ok(matches) => match check(&matches) {
                // Refused only if this key is what breaks the check.
                Err(message) if accepted_pass => {
                    problems.push(problem(Some(line), Some(&key), format!("{message}; the default is used")))
                }
                outcome => {
                    accepted_pass = outcome.is_ok();
                    accepted = candidate;
                    from_file.push(key);
                }
            },
        }
    }
    let matches = parse(command, command_line, &accepted)?;
    Ok(Applied { matches, from_file, problems })
}

/// The file's top-level entries in file order: (line, key, value), or the
/// syntax error (its line and message) that makes the file unusable.
#[allow(clippy::type_complexity)]
fn entries(text: &str) -> Vec<Result<(usize, String, toml::Value), (Option<usize>, String)>> {
    let table = match DeTable::parse(text) {
        Ok(table) => table,
        Err(e) => {
            let line = e.span().map(|span| line_of(text, span.start));
            return vec![Err((line, format!("not valid TOML: {}", e.message().trim())))];
        }
    };
    let mut entries: Vec<_> = table
        .get_ref()
        .iter()
        .map(|(key, value)| (key.span().start, key.get_ref().to_string(), to_value(value.get_ref())))
        .collect();
    entries.sort_by_key(|(start, _, _)| *start);
    entries.into_iter().map(|(start, key, value)| Ok((line_of(text, start), key, value))).collect()
}

/// A spanned TOML value as a plain one (spans are only wanted for keys).
fn to_value(value: &DeValue<'_>) -> toml::Value {
    match value {
        DeValue::String(s) => toml::Value::String(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let digits = digits.trim_start_matches("0x").trim_start_matches("0o").trim_start_matches("0b");
            match i64::from_str_radix(digits, i.radix()) {
                Ok(n) => toml::Value::Integer(n),
                // Out of i64: keep the text, clap will say what is wrong with it.
                Err(_) => toml::Value::String(i.as_str().to_owned()),
            }
        }
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse()
            .map_or_else(|_| toml::Value::String(f.to_string()), toml::Value::Float),
        DeValue::Boolean(b) => toml::Value::Boolean(*b),
        DeValue::Datetime(d) => toml::Value::Datetime(*d),
        DeValue::Array(items) => toml::Value::Array(items.iter().map(|v| to_value(v.get_ref())).collect()),
        DeValue::Table(table) => toml::Value::Table(
            table.iter().map(|(k, v)| (k.get_ref().to_string(), to_value(v.get_ref()))).collect(),
        ),
    }
}

/// The command-line words one file entry stands for.
fn as_flags(key: &str, action: &ArgAction, value: toml::Value) -> Result<Vec<OsString>, String> {
    let flag = |text: &str| OsString::from(format!("--{key}={text}"));
    match action {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            toml::Value::Boolean(true) => Ok(vec![OsString::from(format!("--{key}"))]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!("expected true or false, got {}", describe(&other))),
        },
        ArgAction::Append => match value {
            toml::Value::Array(items) => {
                items.iter().map(|item| scalar(item).map(|text| flag(&text))).collect()
            }
            one => Ok(vec![flag(&scalar(&one)?)]),
        },
        _ => Ok(vec![flag(&scalar(&value)?)]),
    }
}

/// A value written as a flag's argument: strings as they are, numbers in decimal.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        other => Err(format!("expected a string or a number, got {}", describe(other))),
    }
}

/// `6` rather than `"6"` where it reads as a number (either is accepted back).
fn number_or_string(text: String) -> toml::Value {
    if let Ok(n) = text.parse::<i64>() {
        return toml::Value::Integer(n);
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && text.contains('.') => toml::Value::Float(x),
        _ => toml::Value::String(text),
    }
}

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::Array(_) => "a list".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
        other => format!("{} {other}", other.type_str()),
    }
}

fn unknown_key_message(command: &Command, key: &str) -> String {
    let keys = settable_keys(command);
    let respelled = key.replace('_', "-").to_lowercase();
    let hint = if keys.contains(&respelled) {
        format!(" (did you mean {respelled}? keys are spelled like the long flags, with dashes)")
    } else {
        String::new()
    };
    format!("unknown setting{hint}; it is ignored (`lookout --help` lists the settings)")
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_message(error: &clap::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// Parses the file's flags with the real command line after them.
fn parse(
    command: &Command,
    command_line: &[OsString],
    file_flags: &[OsString],
) -> Result<ArgMatches, clap::Error> {
    let program = command_line.first().cloned().unwrap_or_else(|| OsString::from("lookout"));
    let words = std::iter::once(program)
        .chain(file_flags.iter().cloned())
        .chain(command_line.iter().skip(1).cloned());
    command.clone().try_get_matches_from(words)
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes().iter().take(offset).filter(|&&b| b == b'\n').count() + 1
}

/// The effective settings as a settings file, each line saying where its
/// value came from (`--show-settings`). Values of options whose
/// environment value is hidden in `--help` (the TURN credential) are not
/// printed.
pub fn render(command: &Command, matches: &ArgMatches, from_file: &[String]) -> String {
    let mut out = String::new();
    for arg in command.get_arguments() {
        let Some(key) = arg.get_long().filter(|long| !NOT_SETTINGS.contains(long)) else { continue };
        let id = arg.get_id().as_str();
        let source = if from_file.iter().any(|k| k == key) {
            "settings file"
        } else {
            match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "command line",
                Some(ValueSource::EnvVariable) => "environment",
                _ => "default",
            }
        };
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let value = match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => {
                toml::Value::Boolean(raw.first().is_some_and(|v| v == "true"))
            }
            ArgAction::Append => toml::Value::Array(raw.into_iter().map(toml::Value::String).collect()),
            _ if raw.is_empty() => {
                out.push_str(&format!("# {key} is not set ({source})\n"));
                continue;
            }
            _ if arg.is_hide_env_values_set() && raw.iter().any(|v| !v.is_empty()) => {
                out.push_str(&format!("# {key} is set, not shown ({source})\n"));
                continue;
            }
            _ => number_or_string(raw.join(" ")),
        };
        out.push_str(&format!("{key} = {value} # {source}\n"));
    }
    out
}

/// The options of `lookout`, one per line as `key [list] type`, for
/// [`appliance_command`]: `switch` (true or false), or the type of each
/// value, `integer` (unsigned), `number`, `address` (IP:port), `ip`,
/// `duration` (`10s`, `5m`) or `text` (anything else; only `lookout` knows
/// what it accepts); `list` for a repeatable option. A test of the
/// appliance checks that it matches `lookout`'s command line
/// ([`options_table`]).
pub const APPLIANCE_OPTIONS: &str = include_str!("appliance-options.txt");

/// `command`'s settable options as [`APPLIANCE_OPTIONS`] lists them.
pub fn options_table(command: &Command) -> String {
    use std::any::TypeId;
    let mut out = String::from(
        "# lookout's options, for lookout-provision's settings check. Generated by\n\
         # LOOKOUT_WRITE_OPTIONS=1 cargo test -p lookout --lib options_table\n",
    );
    for arg in command.get_arguments() {
        let Some(key) = arg.get_long().filter(|long| !NOT_SETTINGS.contains(long)) else { continue };
        let parser = arg.get_value_parser().type_id();
        let is = |id: TypeId| parser == id;
        let value = if [TypeId::of::<usize>(), TypeId::of::<u64>(), TypeId::of::<u32>(), TypeId::of::<u16>()]
            .into_iter()
            .any(is)
        {
            "integer"
        } else if is(TypeId::of::<f64>()) {
            "number"
        } else if is(TypeId::of::<std::net::SocketAddr>()) {
            "address"
        } else if is(TypeId::of::<std::net::IpAddr>()) {
            "ip"
        } else if is(TypeId::of::<std::time::Duration>()) {
            "duration"
        } else {
            "text"
        };
        let kind = match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => "switch".to_owned(),
            ArgAction::Append => format!("list {value}"),
            _ => value.to_owned(),
        };
        out.push_str(&format!("{key} {kind}\n"));
    }
    out
}

/// A command line with `lookout`'s options (from [`APPLIANCE_OPTIONS`]),
/// for checking a settings file where `lookout` itself is not at hand: the
/// keys, the kind of each value and its type are checked; what only
/// `lookout` knows (a frame rate's range, a resolution's form, the bitrate
/// order) it reports when it starts.
pub fn appliance_command() -> Command {
    let mut command = Command::new("lookout").disable_version_flag(true);
    for line in APPLIANCE_OPTIONS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let Some(key) = words.next() else { continue };
        let mut kind = words.next().unwrap_or("text");
        let mut arg = clap::Arg::new(key).long(key).action(ArgAction::Set);
        if kind == "list" {
            arg = arg.action(ArgAction::Append);
            kind = words.next().unwrap_or("text");
        }
        arg = match kind {
            "switch" => arg.action(ArgAction::SetTrue),
            "integer" => arg.value_parser(clap::value_parser!(u64)),
            "number" => arg.value_parser(clap::value_parser!(f64)),
            "address" => arg.value_parser(clap::value_parser!(std::net::SocketAddr)),
            "ip" => arg.value_parser(clap::value_parser!(std::net::IpAddr)),
            "duration" => arg.value_parser(humantime::parse_duration),
            _ => arg,
        };
        command = command.arg(arg);
    }
    command
}

/// Checks a settings file as `lookout-provision write-image --settings`
/// does before writing it: the problems `lookout` would report (keys and
/// kinds of values; see [`appliance_command`]). Empty when it is fine.
pub fn check_text(path: &Path, text: &str) -> Vec<SettingsProblem> {
    match apply_text(&appliance_command(), &[OsString::from("lookout")], path, text, |_| Ok(())) {
        Ok(applied) => applied.problems,
        // No command line is given, so clap has nothing of ours to refuse.
        Err(e) => {
            vec![SettingsProblem { file: path.to_owned(), line: None, key: None, message: clap_message(&e) }]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Arg;

    fn command() -> Command {
        Command::new("t")
            .arg(Arg::new("low").long("low").value_parser(clap::value_parser!(u32)).default_value("1"))
            .arg(Arg::new("high").long("high").value_parser(clap::value_parser!(u32)).default_value("10"))
            .arg(Arg::new("quiet").long("quiet").action(ArgAction::SetTrue))
            .arg(Arg::new("peer").long("peer").action(ArgAction::Append))
    }

    /// `low <= high`, as lookout's bitrate check.
    fn ordered(matches: &ArgMatches) -> Result<(), String> {
        let get = |id: &str| matches.get_one::<u32>(id).copied().unwrap_or_default();
        if get("low") <= get("high") {
            Ok(())
        } else {
            Err("low must not exceed high".to_owned())
        }
    }

    fn apply(args: &[&str], text: &str) -> Applied {
        let args: Vec<OsString> =
            std::iter::once("t").chain(args.iter().copied()).map(OsString::from).collect();
        apply_text(&command(), &args, Path::new("s.toml"), text, ordered).unwrap()
    }

    #[test]
    fn toml_numbers_in_any_notation_reach_the_parser_as_decimal() {
        let applied = apply(&[], "low = 0x5\nhigh = 1_000\n");
        assert!(applied.problems.is_empty(), "{:?}", applied.problems);
        assert_eq!(applied.matches.get_one::<u32>("low"), Some(&5));
        assert_eq!(applied.matches.get_one::<u32>("high"), Some(&1000));
    }

    #[test]
    fn the_cross_check_refuses_only_the_key_that_breaks_it() {
        let applied = apply(&[], "high = 20\nlow = 30\nquiet = true\n");
        assert_eq!(applied.problems.len(), 1, "{:?}", applied.problems);
        assert_eq!((applied.problems[0].line, applied.problems[0].key.as_deref()), (Some(2), Some("low")));
        assert_eq!(applied.matches.get_one::<u32>("low"), Some(&1), "the default");
        assert_eq!(applied.matches.get_one::<u32>("high"), Some(&20));
        assert!(applied.matches.get_flag("quiet"));
        assert_eq!(applied.from_file, ["high", "quiet"]);
    }

    #[test]
    fn the_command_line_wins_and_its_own_mistakes_are_claps() {
        let applied = apply(&["--low", "3", "--peer", "a"], "low = 2\npeer = [\"b\", \"c\"]\n");
        assert!(applied.problems.is_empty());
        assert_eq!(applied.matches.get_one::<u32>("low"), Some(&3));
        let peers: Vec<&String> = applied.matches.get_many("peer").unwrap().collect();
        assert_eq!(peers, ["a"], "a list on the command line replaces the file's");
        let args = [OsString::from("t"), OsString::from("--low"), OsString::from("x")];
        assert!(apply_text(&command(), &args, Path::new("s.toml"), "", ordered).is_err());
    }

    #[test]
    fn problems_name_file_line_and_key() {
        let applied = apply(&[], "# c\n\nlo_w = 1\nquiet = 1\npeer = { a = 1 }\n");
        let lines: Vec<String> = applied.problems.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("s.toml:3: lo_w: unknown setting"), "{lines:?}");
        assert!(lines[1].starts_with("s.toml:4: quiet: expected true or false, got integer 1"), "{lines:?}");
        assert!(
            lines[2].starts_with("s.toml:5: peer: expected a string or a number, got a table"),
            "{lines:?}"
        );
        let syntax = apply(&[], "low = 2\nhigh = = 3\n");
        assert_eq!(syntax.problems.len(), 1);
        assert_eq!((syntax.problems[0].line, syntax.problems[0].key.as_deref()), (Some(2), None));
        assert_eq!(syntax.matches.get_one::<u32>("low"), Some(&1), "the whole file is ignored");
    }

    #[test]
    fn the_options_table_reads_back_as_the_same_command() {
        let table = options_table(&appliance_command());
        assert_eq!(table, APPLIANCE_OPTIONS);
    }
}
