//! `otactl firmware upload` and `register`: a build onto the server, and
//! into the catalogue of what devices may be offered.

use serde_json::{Value, json};

use super::firmware::describe;
use super::{Ctx, check_device_type, check_version, read_notes};
use crate::cli::{Notes, RegisterArgs, UploadArgs};
use crate::esp;
use crate::failure::{Failure, Result};
use crate::output::{self, print_json};
use crate::upload;

/// Uploads the file, checks that the server stored exactly what was sent,
/// and only then, with `--register`, registers it with the local hash
/// (which the server checks again) under the version the server stored it
/// under: for an esp-app device type without `--version`, the image's own.
pub fn upload(ctx: &Ctx, args: UploadArgs) -> Result<()> {
    check_device_type(&args.device_type)?;
    if let Some(version) = &args.version {
        check_version("--version", version)?;
    }
    if let Some(version) = &args.min_version {
        check_version("--min-version", version)?;
    }
    let notes = read_notes(&Notes {
        notes: args.notes.clone(),
        notes_file: args.notes_file.clone(),
    })?;
    upload::check_file(&args.file)?;
    let api = ctx.api()?;
    // A wrong token or path prefix is refused here, before the file is
    // sent: a server refusing in the middle of a large body only shows up
    // as a broken connection.
    api.get("/api/ota/admin/firmware", &[("limit", "1".into())])?;

    let mut fields = vec![("device_type", args.device_type.clone())];
    if let Some(version) = &args.version {
        fields.push(("version", version.clone()));
    }
    if args.override_version {
        fields.push(("override_version", "true".into()));
    }
    let (mut answer, sent) = upload::upload(&api, &args.file, &fields, !args.no_progress)?;
    let stored = Stored::of(&answer, &args);
    if !ctx.json() {
        println!(
            "Uploaded {} ({}, sha256 {}): the server's hash matches.",
            output::text(&answer["binary_path"]),
            output::bytes(sent.size as i64),
            sent.sha256
        );
        if !answer["image"].is_null() {
            let heading = format!(
                "An ESP-IDF app image, stored as version {}:",
                stored.version.as_deref().unwrap_or("?")
            );
            print!("{}", esp::section(&heading, &esp::summary(&answer["image"])));
        }
    }
    if stored.overridden {
        eprintln!(
            "warning: stored as version {}, although the image's app descriptor says '{}' \
             (--override-version; the server records it as version_overridden)",
            stored.version.as_deref().unwrap_or("?"),
            output::text(&answer["image"]["app"]["version"])
        );
    }
    if args.register {
        let registration = Registration {
            device_type: &args.device_type,
            version: stored.version.as_deref(),
            override_version: stored.overridden || args.override_version,
            filename: answer["filename"].as_str().unwrap_or_default().to_owned(),
            file_hash: sent.sha256.clone(),
            file_size: Some(sent.size),
            build_number: args.build_number,
            notes,
            min_version: args.min_version.clone(),
            stable: args.stable,
            mandatory: args.mandatory,
            rollout: args.rollout,
        };
        let firmware = api
            .post("/api/ota/admin/firmware", &registration.body())
            .inspect_err(|_| {
                eprintln!(
                    "The file is uploaded but not registered; once fixed, run: {}",
                    stored.register_command(&args, &answer)
                );
            })?;
        answer["firmware"] = firmware;
    }

    if ctx.json() {
        print_json(&answer);
        return Ok(());
    }
    match answer.get("firmware") {
        Some(firmware) => {
            println!(
                "Registered firmware {}: stable {}, rollout {} %, mandatory {}.",
                firmware["id"],
                output::text(&firmware["is_stable"]),
                firmware["rollout_percentage"],
                output::text(&firmware["is_mandatory"]),
            );
            if firmware["is_stable"] != true {
                println!("Next: otactl firmware promote {}", firmware["id"]);
            }
        }
        None => println!("Not registered yet. Next: {}", stored.register_command(&args, &answer)),
    }
    Ok(())
}

/// What the server stored an upload as.
struct Stored {
    /// The server's `version`; the one given, from a server that does not say.
    version: Option<String>,
    /// Kept although the image says another (`--override-version`).
    overridden: bool,
}

impl Stored {
    fn of(answer: &Value, args: &UploadArgs) -> Self {
        Stored {
            version: answer["version"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| args.version.clone()),
            overridden: answer["version_overridden"] == true,
        }
    }

    /// The `otactl firmware register` command that registers this upload.
    fn register_command(&self, args: &UploadArgs, answer: &Value) -> String {
        let mut command = format!("otactl firmware register -t {}", args.device_type);
        match &self.version {
            Some(version) => command.push_str(&format!(" -v {version}")),
            None => command.push_str(&format!(" --filename {}", output::text(&answer["filename"]))),
        }
        if self.overridden {
            command.push_str(" --override-version");
        }
        command.push_str(&format!(" --file {}", args.file.display()));
        command
    }
}

/// The body of `POST /api/ota/admin/firmware`.
struct Registration<'a> {
    device_type: &'a str,
    /// `None` leaves it to the server: the image's own, for an esp-app device type.
    version: Option<&'a str>,
    override_version: bool,
    filename: String,
    file_hash: String,
    file_size: Option<u64>,
    build_number: Option<i64>,
    notes: Option<String>,
    min_version: Option<String>,
    stable: bool,
    mandatory: bool,
    rollout: Option<u8>,
}

impl Registration<'_> {
    fn body(&self) -> Value {
        let mut body = json!({
            "device_type": self.device_type,
            "version": self.version,
            "build_number": self.build_number,
            "filename": self.filename,
            "file_hash": self.file_hash,
            "file_size": self.file_size,
            "release_notes": self.notes,
            "min_version": self.min_version,
            "is_stable": self.stable,
            "is_mandatory": self.mandatory,
            "rollout_percentage": self.rollout.unwrap_or(100),
        });
        // Sent only when asked for: a server older than ESP images would refuse it.
        if self.override_version {
            body["override_version"] = json!(true);
        }
        body
    }
}

pub fn register(ctx: &Ctx, args: RegisterArgs) -> Result<()> {
    check_device_type(&args.device_type)?;
    if let Some(version) = &args.min_version {
        check_version("--min-version", version)?;
    }
    let version = args
        .version
        .as_deref()
        .map(|text| ota_core::Version::parse(text).map_err(|e| Failure::usage(format!("--version `{text}`: {e}"))))
        .transpose()?;
    // Without a version, the server reads it from the stored image; the
    // file's name cannot be guessed then.
    let filename = match (&args.filename, &version) {
        (Some(filename), _) => filename.clone(),
        (None, Some(version)) => version.file_name(),
        (None, None) => return Err(Failure::usage("give --version or --filename")),
    };
    let (file_hash, file_size) = match (&args.file, &args.hash) {
        (Some(path), _) => {
            let local = upload::hash_file(path)?;
            (local.sha256, Some(local.size))
        }
        (None, Some(hash)) => {
            ota_core::Sha256Hex::parse(hash).map_err(|e| Failure::usage(format!("--hash: {e}")))?;
            (hash.clone(), None)
        }
        (None, None) => return Err(Failure::usage("give --file or --hash")),
    };
    let registration = Registration {
        device_type: &args.device_type,
        version: args.version.as_deref(),
        override_version: args.override_version,
        filename,
        file_hash,
        file_size,
        build_number: args.build_number,
        notes: read_notes(&args.notes)?,
        min_version: args.min_version.clone(),
        stable: args.stable,
        mandatory: args.mandatory,
        rollout: args.rollout,
    };
    let firmware = ctx.api()?.post("/api/ota/admin/firmware", &registration.body())?;
    if ctx.json() {
        print_json(&firmware);
    } else {
        println!("Registered firmware {}.", firmware["id"]);
        print!("{}", describe(&firmware));
    }
    Ok(())
}
