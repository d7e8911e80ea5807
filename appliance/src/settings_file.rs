//! The settings file (`lookout/settings.toml` beside the boot identity, or
//! `--config FILE`). The code is in [`lookout_provisioning::settings_file`],
//! shared with `lookout-provision write-image --settings`, which checks a
//! file with it before writing it; `crate::settings::Cli::load` applies it.

pub use lookout_provisioning::settings_file::*;
