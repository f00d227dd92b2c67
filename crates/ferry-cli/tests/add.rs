use crate::common::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

#[test]
fn add_locks_files_and_records_location() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, "hello.txt", "hello world\n");
    write(&d, "sub/deeper/x.bin", "xx");
    write(&d, "dup1", "same");
    write(&d, "dup2", "same");
    write(&d, "empty.txt", "");
    let r = env.ferry(&d, &["add", "--json"]);
    r.assert_ok();
    let lines = r.json_lines();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines.iter().all(|l| l["success"] == true));
    let key = link_key(&d.join("hello.txt"));
    assert_eq!(
        key,
        "SHA256E-s12--a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447.txt"
    );
    assert_eq!(
        std::fs::read_link(d.join("hello.txt"))
            .unwrap()
            .to_str()
            .unwrap(),
        format!(".git/annex/objects/J7/0G/{key}/{key}")
    );
    assert!(
        std::fs::read_link(d.join("sub/deeper/x.bin"))
            .unwrap()
            .starts_with("../../.git/annex/objects")
    );
    assert_eq!(
        std::fs::read(d.join("hello.txt")).unwrap(),
        b"hello world\n"
    );
    assert_eq!(
        link_key(&d.join("empty.txt")),
        "SHA256E-s0--e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.txt"
    );
    assert_eq!(link_key(&d.join("dup1")), link_key(&d.join("dup2")));
    // Objects are read-only, in a read-only key directory, as git-annex leaves them.
    let obj = d.join(".git/annex/objects/J7/0G").join(&key).join(&key);
    assert_eq!(
        std::fs::metadata(&obj).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert_eq!(
        std::fs::metadata(obj.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o555
    );
    // Staged as symlinks; add does not commit.
    let staged = env.git(&d, &["ls-files", "-s", "hello.txt"]).stdout();
    assert!(staged.starts_with("120000 "), "{staged}");
    assert!(
        env.git(&d, &["rev-parse", "--verify", "-q", "HEAD"])
            .stdout()
            .is_empty()
    );
    // Location log on the branch, lower hash dir.
    let uuid = config(&env, &d, "annex.uuid");
    let log = env
        .git(&d, &["show", &format!("git-annex:e7d/d01/{key}.log")])
        .assert_ok()
        .stdout();
    assert!(log.trim_end().ends_with(&format!(" 1 {uuid}")), "{log}");
    assert_eq!(log.lines().count(), 1);
    // Nothing left behind in the journal.
    assert_eq!(
        std::fs::read_dir(d.join(".git/annex/journal"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn dotfiles_and_largefiles_decide_what_goes_to_git() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, ".hidden", "dot");
    write(&d, ".config/app.ini", "x=1");
    write(&d, "small.dat", "tiny");
    write(&d, "big.dat", vec![7u8; 5000]);
    write(&d, "notes.txt", vec![b'n'; 5000]);
    write(&d, ".gitattributes", "*.txt annex.largefiles=nothing\n");
    env.git(&d, &["config", "annex.largefiles", "largerthan=1kb"])
        .assert_ok();
    env.ferry(&d, &["add"]).assert_ok();
    let mode = |p: &str| {
        env.git(&d, &["ls-files", "-s", p])
            .stdout()
            .split(' ')
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(mode(".hidden"), "100644");
    assert_eq!(mode(".config/app.ini"), "100644");
    assert_eq!(mode("small.dat"), "100644");
    assert_eq!(mode("big.dat"), "120000");
    // git config overrides .gitattributes (as in git-annex): notes.txt is large by size.
    assert_eq!(mode("notes.txt"), "120000");
    env.git(&d, &["commit", "-qm", "x"]).assert_ok();

    // Without the git config, .gitattributes decides.
    env.git(&d, &["config", "--unset", "annex.largefiles"])
        .assert_ok();
    write(&d, "more.txt", vec![b'm'; 5000]);
    write(&d, "more.bin", "b");
    env.ferry(&d, &["add"]).assert_ok();
    assert_eq!(mode("more.txt"), "100644");
    assert_eq!(mode("more.bin"), "120000");

    // annex.dotfiles=true annexes dotfiles.
    env.git(&d, &["config", "annex.dotfiles", "true"])
        .assert_ok();
    write(&d, ".secret", "s");
    env.ferry(&d, &["add", ".secret"]).assert_ok();
    assert_eq!(mode(".secret"), "120000");
    env.git(&d, &["commit", "-qm", "y"]).assert_ok();
    env.annex(&d, &["fsck", "--quiet"]).assert_ok();
}

#[test]
fn a_bad_largefiles_expression_is_refused_before_anything_changes() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, "f", "x");
    env.git(&d, &["config", "annex.largefiles", "largerthan=lots"])
        .assert_ok();
    let r = env.ferry(&d, &["add"]);
    r.assert_fails();
    assert!(r.stderr().contains("annex.largefiles"), "{}", r.stderr());
    assert!(std::fs::symlink_metadata(d.join("f")).unwrap().is_file());
}

#[test]
fn foreign_symlinks_are_committed_as_symlinks_never_followed() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    let outside = write(env.tmp.path(), "outside.txt", "not ours");
    std::os::unix::fs::symlink(&outside, d.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("missing/target", d.join("dangling")).unwrap();
    env.ferry(&d, &["add"]).assert_ok();
    for l in ["abs-link", "dangling"] {
        let s = env.git(&d, &["ls-files", "-s", l]).stdout();
        assert!(s.starts_with("120000 "), "{s}");
    }
    assert_eq!(std::fs::read_link(d.join("abs-link")).unwrap(), outside);
    assert_eq!(std::fs::read(&outside).unwrap(), b"not ours");
    assert_eq!(
        std::fs::read_link(d.join("dangling")).unwrap().to_str(),
        Some("missing/target")
    );
}

#[test]
fn unchanged_annexed_files_are_skipped_and_changed_ones_reannexed() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, "a", "version 1");
    write(&d, "b", "bee");
    env.ferry(&d, &["add"]).assert_ok();
    env.git(&d, &["commit", "-qm", "1"]).assert_ok();
    let old = link_key(&d.join("a"));
    let r = env.ferry(&d, &["add", "--json"]);
    r.assert_ok();
    assert!(r.json_lines().is_empty(), "nothing to do: {}", r.stdout());
    // Replace the link by new content (what an editor that writes a new file does).
    std::fs::remove_file(d.join("a")).unwrap();
    write(&d, "a", "version 2");
    let r = env.ferry(&d, &["add", "--json"]);
    r.assert_ok();
    let lines = r.json_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["file"], "a");
    let new = link_key(&d.join("a"));
    assert_ne!(old, new);
    // The old version is still in the store.
    let found = walk_objects(&d)
        .into_iter()
        .filter(|p| p.ends_with(&old))
        .count();
    assert_eq!(found, 1);
}

fn walk_objects(d: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("find")
        .arg(d.join(".git/annex/objects"))
        .arg("-type")
        .arg("f")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn awkward_names_round_trip() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    let long = "n".repeat(251) + ".txt"; // 255 bytes
    let names: Vec<Vec<u8>> = vec![
        b"with space.txt".to_vec(),
        b"new\nline.txt".to_vec(),
        b"-leading-dash".to_vec(),
        b"bad\xff\xfebytes.bin".to_vec(),
        "ünïcödé/fïlé.jpeg".as_bytes().to_vec(),
        long.into_bytes(),
        b"tab\there".to_vec(),
        b"star*and?[x].txt".to_vec(),
    ];
    for (i, n) in names.iter().enumerate() {
        write(&d, n, format!("content {i}"));
    }
    let r = env.ferry(&d, &["add", "--", "."]);
    r.assert_ok();
    for (i, n) in names.iter().enumerate() {
        let p = d.join(std::ffi::OsStr::from_bytes(n));
        assert!(
            std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{}",
            String::from_utf8_lossy(n)
        );
        assert_eq!(
            std::fs::read(&p).unwrap(),
            format!("content {i}").into_bytes()
        );
    }
    // Adding one such file by name works too (leading dash after --).
    write(&d, "-x", "dash");
    env.ferry(&d, &["add", "--", "-x"]).assert_ok();
    assert!(
        std::fs::symlink_metadata(d.join("-x"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    env.git(&d, &["commit", "-qm", "names"]).assert_ok();
    env.annex(&d, &["fsck", "--quiet"]).assert_ok();
    env.ferry(&d, &["fsck"]).assert_ok();
}

#[test]
fn sparse_5gib_file_is_streamed_in_constant_memory() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    let f = std::fs::File::create(d.join("sparse.img")).unwrap();
    f.set_len(5 << 30).unwrap();
    drop(f);
    let mut cmd = std::process::Command::new(ferry_bin());
    cmd.arg("add")
        .arg("sparse.img")
        .current_dir(&d)
        .env("HOME", &env.home)
        .env("GIT_CONFIG_GLOBAL", env.home.join(".gitconfig"));
    let (status, rss_kib) = run_with_rss(cmd);
    assert!(status.success());
    assert!(
        rss_kib < 64 * 1024,
        "peak RSS {rss_kib} KiB for a 5 GiB file"
    );
    let key = link_key(&d.join("sparse.img"));
    // SHA-256 of 5 GiB of zeros, computed independently.
    let expect = std::process::Command::new("python3")
        .arg("-c")
        .arg("import hashlib\nh = hashlib.sha256()\nb = bytes(1 << 24)\nfor _ in range(320): h.update(b)\nprint(h.hexdigest())")
        .output()
        .unwrap();
    let expect = String::from_utf8_lossy(&expect.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(key, format!("SHA256E-s5368709120--{expect}.img"));
}
