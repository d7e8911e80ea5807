//! `lookout-provision`: the factory tool. Makes camera identities and their
//! printed labels, writes an identity into an SD-card image, and shows or
//! verifies what was made. See `docs/provisioning.md` for the workflow.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use lookout_provisioning::batch::{self, MAX_COUNT};
use lookout_provisioning::disk_image::{self, BootPartition, WriteOptions};
use lookout_provisioning::label::{PNG_FILE_NAME, SVG_FILE_NAME};
use lookout_provisioning::wifi::{Country, Passphrase, Security, Ssid, WifiNetwork, WifiSummary};
use lookout_provisioning::{Identity, FORMAT_VERSION, IDENTITY_FILE_NAME};
use time::format_description::well_known::Rfc3339;

/// Lookout factory provisioning: identities, labels and SD images.
///
/// Workflow: `new` makes identities with labels, print `label.png` or
/// `label.svg`, `write-image` puts one identity into the camera's SD image,
/// `verify` reads it back.
#[derive(Debug, Parser)]
#[command(name = "lookout-provision", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make new identities, each in its own folder DIR/<id>/ with
    /// identity.json, label.svg and label.png (all mode 0600: they hold the
    /// room secret). Never reuses a device ID that already exists in DIR.
    New {
        /// Folder for the new identities (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// How many identities to make.
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_COUNT as i64))]
        count: u32,
        /// Start every device ID with this (characters a-z and 2-7, at most 8),
        /// e.g. a batch or factory code. Four random characters follow.
        #[arg(long, default_value = "", value_name = "P")]
        prefix: String,
    },
    /// Write an identity into the boot (FAT) partition of a Raspberry Pi SD
    /// image, as lookout/identity.json, and optionally the Wi-Fi network the
    /// camera joins, as lookout/wifi.conf, and a settings file, as
    /// lookout/settings.toml. Everything is checked before the image is
    /// changed; with --out the input image is never modified.
    WriteImage {
        /// The SD-card image (MBR or GPT partition table).
        #[arg(long, value_name = "IMG")]
        image: PathBuf,
        /// The identity: a folder made by `new`, or its identity.json.
        #[arg(long, value_name = "DIR")]
        identity: PathBuf,
        /// Write a modified copy here and leave IMG untouched.
        #[arg(long, value_name = "NEW_IMG")]
        out: Option<PathBuf>,
        /// Overwrite an identity the image already holds (its label stops working).
        #[arg(long)]
        replace: bool,
        /// The camera's settings file (TOML, lookout's long options by name;
        /// docs/settings.md), written as lookout/settings.toml. Checked first:
        /// an unknown key, a value of the wrong kind or bad TOML refuses the
        /// write, naming file, line and key.
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        #[command(flatten)]
        wifi: WifiArgs,
    },
    /// Show an identity's public facts: device ID, host name, certificate
    /// fingerprint. The room secret only with --reveal-secret.
    Show {
        /// A folder made by `new`, or an identity.json.
        #[arg(value_name = "IDENTITY")]
        identity: PathBuf,
        /// Also print the room secret and the full viewer URL.
        #[arg(long)]
        reveal_secret: bool,
    },
    /// Read the identity back from an SD image and check it.
    Verify {
        /// The SD-card image.
        #[arg(value_name = "IMG")]
        image: PathBuf,
        /// Also check that the image holds exactly this identity (folder or file).
        #[arg(long, value_name = "IDENTITY")]
        expect: Option<PathBuf>,
    },
}

/// The Wi-Fi options of `write-image`. Without them the camera uses Ethernet
/// only (and any Wi-Fi settings the image already holds stay as they are).
#[derive(Debug, Args)]
#[command(next_help_heading = "Wi-Fi (optional; Ethernet needs nothing)")]
struct WifiArgs {
    /// Name (SSID) of the Wi-Fi network the camera joins. Replaces any Wi-Fi
    /// settings the image holds. Needs --wifi-country and either
    /// --wifi-passphrase-file or --wifi-open.
    #[arg(long, value_name = "SSID", requires = "wifi_country")]
    wifi_ssid: Option<String>,
    /// Two-letter country code where the camera is used (GB, US, DE, ...):
    /// it selects the allowed radio channels.
    #[arg(long, value_name = "CC", requires = "wifi_ssid")]
    wifi_country: Option<String>,
    /// File whose first line is the WPA2/WPA3 passphrase (8 to 63
    /// characters), or - to read it from standard input. A file, not an
    /// argument, so the passphrase stays out of process lists and shell history.
    #[arg(long, value_name = "FILE", requires = "wifi_ssid", conflicts_with = "wifi_open")]
    wifi_passphrase_file: Option<PathBuf>,
    /// The network has no passphrase.
    #[arg(long, requires = "wifi_ssid")]
    wifi_open: bool,
    /// The network does not broadcast its name.
    #[arg(long, requires = "wifi_ssid")]
    wifi_hidden: bool,
}

impl WifiArgs {
    /// The network these options describe, checked; `None` without --wifi-ssid.
    fn network(&self) -> anyhow::Result<Option<WifiNetwork>> {
        let (Some(ssid), Some(country)) = (&self.wifi_ssid, &self.wifi_country) else {
            return Ok(None);
        };
        let security = match (&self.wifi_passphrase_file, self.wifi_open) {
            (Some(file), false) => Security::Personal(Passphrase::new(read_passphrase(file)?)?),
            (None, true) => Security::Open,
            _ => bail!(
                "--wifi-ssid needs --wifi-passphrase-file FILE, or --wifi-open for a network without a passphrase"
            ),
        };
        Ok(Some(WifiNetwork {
            country: Country::parse(country)?,
            ssid: Ssid::new(ssid.as_bytes())?,
            security,
            hidden: self.wifi_hidden,
        }))
    }
}

/// The first line of `file` (or of standard input for `-`), without its line end.
fn read_passphrase(file: &Path) -> anyhow::Result<String> {
    // Far more than a passphrase (63 characters); stops a wrong file early.
    const LIMIT: u64 = 4096;
    let mut text = String::new();
    let read = if file == Path::new("-") {
        std::io::stdin().take(LIMIT).read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(LIMIT).read_to_string(&mut text))
    };
    read.with_context(|| format!("cannot read the Wi-Fi passphrase from {}", file.display()))?;
    let line = text.lines().next().unwrap_or("");
    Ok(line.to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lookout-provision: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::New { out, count, prefix } => new(&out, count as usize, &prefix),
        Command::WriteImage { image, identity, out, replace, settings, wifi } => {
            write_image(&image, &identity, out, replace, settings.as_deref(), &wifi)
        }
        Command::Show { identity, reveal_secret } => {
            let identity = load_identity(&identity)?;
            print!("{}", describe(&identity, reveal_secret));
            Ok(())
        }
        Command::Verify { image, expect } => verify(&image, expect.as_deref()),
    }
}

fn new(out: &Path, count: usize, prefix: &str) -> anyhow::Result<()> {
    let created = batch::create_batch(out, count, prefix)
        .with_context(|| format!("cannot make identities in {}", out.display()))?;
    for made in &created {
        println!(
            "{id}  {folder}  (certificate {fp})",
            id = made.identity.device_id(),
            folder = made.folder.display(),
            fp = made.identity.certificate_fingerprint_short(),
        );
    }
    println!(
        "made {} identit{} in {}; print {PNG_FILE_NAME} or {SVG_FILE_NAME} from each folder",
        created.len(),
        if created.len() == 1 { "y" } else { "ies" },
        out.display()
    );
    Ok(())
}

fn write_image(
    image: &Path,
    identity: &Path,
    out: Option<PathBuf>,
    replace: bool,
    settings: Option<&Path>,
    wifi: &WifiArgs,
) -> anyhow::Result<()> {
    let identity = load_identity(identity)?;
    let wifi = wifi.network().context("invalid Wi-Fi settings")?;
    let settings = settings.map(read_settings).transpose()?;
    let report = disk_image::write_identity(image, &identity, &WriteOptions { out, replace, wifi, settings })
        .with_context(|| format!("cannot write the identity into {}", image.display()))?;
    println!(
        "wrote {path} for {id} to {part} of {img}{replaced}",
        path = disk_image::identity_path_in_partition(),
        id = identity.device_id(),
        part = describe_partition(&report.partition),
        img = report.image.display(),
        replaced = if report.replaced { " (replaced the identity it held)" } else { "" },
    );
    if let Some(summary) = report.wifi_conf.as_deref().map(WifiSummary::of) {
        println!("wrote {} (Wi-Fi: {summary})", disk_image::wifi_path_in_partition());
    }
    if report.settings.is_some() {
        println!("wrote {}", disk_image::settings_path_in_partition());
    }
    Ok(())
}

/// Reads a settings file and checks it as the camera will read it; any
/// problem (file, line, key) refuses the write: on the camera it would only
/// be reported, and a card is easier to fix here than on a shelf.
fn read_settings(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the settings file {}", path.display()))?;
    let problems = lookout_provisioning::settings_file::check_text(path, &text);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        bail!("the settings file has problems; nothing was written:\n{}", list.join("\n"));
    }
    Ok(text)
}

fn verify(image: &Path, expect: Option<&Path>) -> anyhow::Result<()> {
    let found = disk_image::read_identity(image)
        .with_context(|| format!("{} does not hold a valid identity", image.display()))?;
    if let Some(expected) = expect {
        let expected = load_identity(expected)?;
        if found.identity.device_id() != expected.device_id()
            || found.identity.room_secret() != expected.room_secret()
            || found.identity.certificate_der() != expected.certificate_der()
        {
            bail!(
                "{} holds device {}, not the expected identity {}",
                image.display(),
                found.identity.device_id(),
                expected.device_id()
            );
        }
    }
    println!("{}: valid identity on {}", image.display(), describe_partition(&found.partition));
    print!("{}", describe(&found.identity, false));
    match &found.wifi_conf {
        Some(conf) => println!("Wi-Fi:               {}", WifiSummary::of(conf)),
        None => println!("Wi-Fi:               none (Ethernet only)"),
    }
    match &found.settings {
        Some(text) => println!(
            "Settings:            {} ({} lines)",
            disk_image::settings_path_in_partition(),
            text.lines().count()
        ),
        None => println!("Settings:            none (the defaults)"),
    }
    if expect.is_some() {
        println!("matches the expected identity");
    }
    Ok(())
}

/// Loads an identity from a folder (its identity.json) or a file.
fn load_identity(path: &Path) -> anyhow::Result<Identity> {
    let file = if path.is_dir() { path.join(IDENTITY_FILE_NAME) } else { path.to_owned() };
    if path.is_dir() && !file.exists() {
        bail!(
            "{} holds no {IDENTITY_FILE_NAME}: pass one camera's folder made by `new` (DIR/<id>), not the batch folder",
            path.display()
        );
    }
    Identity::load(&file).with_context(|| format!("invalid identity {}", file.display()))
}

fn describe_partition(partition: &BootPartition) -> String {
    format!(
        "partition {} ({}, offset {} bytes, {} MiB)",
        partition.number,
        partition.table,
        partition.offset,
        partition.size / (1024 * 1024)
    )
}

/// The identity as `key: value` lines; the secret only when asked for.
fn describe(identity: &Identity, reveal_secret: bool) -> String {
    let created = identity.created_at().format(&Rfc3339).unwrap_or_else(|_| "?".to_owned());
    let mut text = format!(
        "device ID:           {id}\n\
         host name:           {host}.local\n\
         created:             {created}\n\
         format version:      {FORMAT_VERSION}\n\
         certificate SHA-256: {fp}\n\
         fingerprint (label): {short}\n",
        id = identity.device_id(),
        host = identity.hostname(),
        fp = identity.certificate_fingerprint(),
        short = identity.certificate_fingerprint_short(),
    );
    if reveal_secret {
        text.push_str(&format!(
            "room secret:         {}\nviewer URL:          {}\n",
            identity.room_secret().expose_hex(),
            identity.viewer_url(None)
        ));
    } else {
        text.push_str(&format!(
            "viewer URL:          https://{}.local/#room=<hidden; --reveal-secret shows it>\n",
            identity.hostname()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
