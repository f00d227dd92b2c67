use crate::common::*;

#[test]
fn init_creates_git_repo_and_annex() {
    let env = Env::new();
    let d = env.mkdir("r");
    let r = env.ferry(&d, &["init", "--json"]);
    r.assert_ok();
    let j = &r.json_lines()[0];
    let uuid = config(&env, &d, "annex.uuid");
    assert_eq!(j["uuid"], uuid.as_str());
    assert_eq!(j["created"], true);
    assert_eq!(uuid.len(), 36);
    assert_eq!(&uuid[14..15], "4", "a v4 UUID");
    assert_eq!(config(&env, &d, "annex.version"), "10");
    assert_eq!(
        env.git(&d, &["symbolic-ref", "HEAD"]).stdout().trim(),
        "refs/heads/main"
    );
    let log = env
        .git(&d, &["show", "git-annex:uuid.log"])
        .assert_ok()
        .stdout();
    assert!(log.starts_with(&format!("{uuid} tester@")), "{log}");
    assert!(log.contains(" timestamp="));
    // The first branch commit is git-annex's "branch created" with an empty tree.
    let first = env
        .git(&d, &["log", "--format=%s", "--reverse", "git-annex"])
        .stdout();
    assert_eq!(first.lines().next(), Some("branch created"));
    // Real git-annex accepts the repository and knows its description.
    let info = env.annex(&d, &["info", "--fast"]).assert_ok().stdout();
    assert!(info.contains("tester@"), "{info}");
}

#[test]
fn init_with_description_and_rerun_keeps_uuid() {
    let env = Env::new();
    let d = env.mkdir("r");
    env.ferry(&d, &["init", "laptop A"]).assert_ok();
    let uuid = config(&env, &d, "annex.uuid");
    let tip = env.git(&d, &["rev-parse", "git-annex"]).stdout();
    let r = env.ferry(&d, &["init"]);
    r.assert_ok();
    assert!(r.stdout().contains("already initialised"));
    assert_eq!(config(&env, &d, "annex.uuid"), uuid);
    assert_eq!(
        env.git(&d, &["rev-parse", "git-annex"]).stdout(),
        tip,
        "rerun must change nothing"
    );
    let log = env.git(&d, &["show", "git-annex:uuid.log"]).stdout();
    assert!(
        log.starts_with(&format!("{uuid} laptop A timestamp=")),
        "{log}"
    );
}

#[test]
fn init_in_git_annex_repo_keeps_everything() {
    let env = Env::new();
    let d = env.annex_repo("r");
    let uuid = config(&env, &d, "annex.uuid");
    let tip = env.git(&d, &["rev-parse", "git-annex"]).stdout();
    env.ferry(&d, &["init"]).assert_ok();
    assert_eq!(config(&env, &d, "annex.uuid"), uuid);
    assert_eq!(env.git(&d, &["rev-parse", "git-annex"]).stdout(), tip);
}

#[test]
fn init_in_a_clone_gets_new_uuid_and_origin_branch() {
    let env = Env::new();
    let a = env.ferry_repo("a");
    write(&a, "f.txt", "content of f\n");
    env.ferry(&a, &["add"]).assert_ok();
    env.git(&a, &["commit", "-qm", "f"]).assert_ok();
    let ua = config(&env, &a, "annex.uuid");
    env.git(env.tmp.path(), &["clone", "-q", "a", "b"])
        .assert_ok();
    let b = env.path("b");
    env.ferry(&b, &["init", "clone b"]).assert_ok();
    let ub = config(&env, &b, "annex.uuid");
    assert_ne!(ua, ub);
    let log = env.git(&b, &["show", "git-annex:uuid.log"]).stdout();
    assert!(
        log.contains(&ua) && log.contains(&format!("{ub} clone b")),
        "{log}"
    );
    // The clone knows where f's content is (in a), and so does real git-annex.
    let w = env.ferry(&b, &["whereis", "--json", "f.txt"]);
    let j = &w.json_lines()[0];
    assert_eq!(j["whereis"][0]["uuid"], ua.as_str());
    assert_eq!(j["whereis"][0]["remote"], "origin");
    let aw = env
        .annex(&b, &["whereis", "--json", "f.txt"])
        .assert_ok()
        .stdout();
    assert!(aw.contains(&ua), "{aw}");
}

#[test]
fn commands_outside_a_repo_explain_what_to_do() {
    let env = Env::new();
    let d = env.mkdir("plain");
    let r = env.ferry(&d, &["add"]);
    r.assert_fails();
    assert!(
        r.stderr().contains("not inside a git repository"),
        "{}",
        r.stderr()
    );
    assert!(r.stderr().contains("ferry init"), "{}", r.stderr());
    env.git(&d, &["init", "-q"]).assert_ok();
    let r = env.ferry(&d, &["whereis"]);
    r.assert_fails();
    assert!(
        r.stderr().contains("not a ferry/git-annex repository yet"),
        "{}",
        r.stderr()
    );
}
