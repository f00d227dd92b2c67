use crate::ui;
use ferry_lib::repo::InitOutcome;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A description of this repository (default: user@host:path)
    description: Option<String>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cwd = ui::cwd()?;
    let default = default_description(&cwd);
    let (repo, outcome) =
        ferry_lib::Repo::init(&cwd, a.description.as_deref(), &default, &ui::options())?;
    let desc = repo.description(repo.uuid())?.unwrap_or_default();
    if a.json {
        let v = serde_json::json!({
            "command": "init",
            "success": true,
            "uuid": repo.uuid(),
            "description": desc,
            "created": outcome == InitOutcome::Created,
        });
        println!("{v}");
    } else {
        match outcome {
            InitOutcome::Created => println!("init {desc} ok (uuid {})", repo.uuid()),
            InitOutcome::AlreadyInitialized => {
                println!("init {desc} ok (already initialised, uuid {})", repo.uuid())
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `user@host:/path`, as git-annex describes a new repository.
pub fn default_description(dir: &std::path::Path) -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(user_from_uid);
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length; gethostname NUL-terminates within it on success.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".into()
    };
    let path = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    format!("{user}@{host}:{}", path.display())
}

fn user_from_uid() -> String {
    // SAFETY: getpwuid returns NULL or a pointer to static storage valid until the next call.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return "user".into();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}
