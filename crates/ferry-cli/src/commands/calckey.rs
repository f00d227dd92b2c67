use ferry_lib::hash::{Backend, hash_file};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Files to compute keys for
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
    /// Key backend: SHA256E (default), SHA256, SHA512E, SHA512
    #[arg(long, default_value = "SHA256E")]
    backend: String,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let backend = crate::commands::add::parse_backend(&a.backend)?;
    let mut code = ExitCode::SUCCESS;
    for f in &a.files {
        match key_of(backend, f) {
            Ok(k) => println!("{k}"),
            Err(e) => {
                eprintln!("ferry: error: {}: {e}", f.display());
                code = ExitCode::from(1);
            }
        }
    }
    Ok(code)
}

fn key_of(backend: Backend, f: &std::path::Path) -> std::io::Result<ferry_lib::Key> {
    let mut file = std::fs::File::open(f)?;
    let size = file.metadata()?.len();
    let (hex, n) = hash_file(backend, &mut file, size)?;
    let name = f
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    Ok(backend.key(n, &hex, &name))
}
