use crate::common::*;
use std::os::unix::fs::PermissionsExt;

fn object_of(d: &std::path::Path, file: &str) -> std::path::PathBuf {
    let t = std::fs::read_link(d.join(file)).unwrap();
    d.join(t)
}

#[test]
fn corrupt_content_is_quarantined_and_logged_absent() {
    let env = Env::new();
    let d = env.ferry_repo("r");
    write(&d, "good", "good content");
    write(&d, "bad", "bad content!");
    env.ferry(&d, &["add"]).assert_ok();
    env.git(&d, &["commit", "-qm", "x"]).assert_ok();
    env.ferry(&d, &["fsck"]).assert_ok();
    let obj = object_of(&d, "bad");
    let key = link_key(&d.join("bad"));
    std::fs::set_permissions(
        obj.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&obj, "bad contenT!").unwrap(); // same size, different bytes
    // --fast only checks presence.
    env.ferry(&d, &["fsck", "--fast"]).assert_ok();
    let r = env.ferry(&d, &["fsck", "--json"]);
    r.assert_fails();
    let lines = r.json_lines();
    let bad = lines.iter().find(|l| l["file"] == "bad").unwrap();
    assert_eq!(bad["success"], false);
    assert!(
        bad["problems"][0].as_str().unwrap().contains("corrupt"),
        "{bad}"
    );
    assert_eq!(
        lines.iter().find(|l| l["file"] == "good").unwrap()["success"],
        true
    );
    assert!(d.join(".git/annex/bad").join(&key).is_file());
    assert!(!obj.exists());
    // The location log now says the content is not here; real git-annex agrees.
    let w = env.ferry(&d, &["whereis", "--json", "bad"]);
    assert_eq!(w.json_lines()[0]["copies"], 0);
    let aw = env.annex(&d, &["whereis", "bad"]);
    assert!(aw.stdout().contains("(0 copies)"), "{}", aw.stdout());
}

#[test]
fn location_log_is_repaired_both_ways() {
    let env = Env::new();
    let d = env.annex_repo("r");
    write(&d, "present-unlogged", "one");
    write(&d, "logged-missing", "two");
    env.annex(&d, &["add", "--quiet", "."]).assert_ok();
    env.git(&d, &["commit", "-qm", "x"]).assert_ok();
    let uuid = config(&env, &d, "annex.uuid");
    let k1 = link_key(&d.join("present-unlogged"));
    env.annex(&d, &["setpresentkey", &k1, &uuid, "0"])
        .assert_ok();
    let obj = object_of(&d, "logged-missing");
    std::fs::set_permissions(
        obj.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::remove_file(&obj).unwrap();

    let r = env.ferry(&d, &["fsck"]);
    r.assert_fails();
    assert!(
        r.stderr().contains("did not say so; log fixed"),
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr().contains("it is missing; log fixed"),
        "{}",
        r.stderr()
    );
    let aw = env.annex(&d, &["whereis", "present-unlogged"]).stdout();
    assert!(aw.contains("(1 copy)") && aw.contains(&uuid), "{aw}");
    let aw = env.annex(&d, &["whereis", "logged-missing"]).stdout();
    assert!(aw.contains("(0 copies)"), "{aw}");
    // A second run finds the log right; only the lost copy is still a problem (numcopies 1).
    let r = env.ferry(&d, &["fsck", "--json"]);
    r.assert_fails();
    let lines = r.json_lines();
    assert_eq!(
        lines
            .iter()
            .find(|l| l["file"] == "present-unlogged")
            .unwrap()["success"],
        true
    );
    let lost = lines
        .iter()
        .find(|l| l["file"] == "logged-missing")
        .unwrap();
    assert!(
        lost["problems"][0]
            .as_str()
            .unwrap()
            .contains("only 0 known copies"),
        "{lost}"
    );
}
