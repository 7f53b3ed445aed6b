//! The dashboard in a real browser: headless Chromium over WebDriver (fantoccini) against
//! the real `hoist server` and real `hoist-agent run` daemons. It signs in, watches a
//! deployment reach its end without a reload, reads a failed host's log tail (script
//! output with markup shown as text), approves a release at its gate and sees production
//! start, finds a viewer shown no button and refused when it posts anyway, and stops a
//! deployment. Screenshots of the main pages go to `target/screenshots/`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hoist_tests::browser::{chromium_capabilities, need_chromium, screenshot_dir, ChromeDriver};
use hoist_tests::fleet::{Agent, Coordinator, OPERATOR_TOKEN};
use hoist_tests::{wait_for, Scratch};
use hyper_util::client::legacy::connect::HttpConnector;

const MARKUP: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>";

/// A bundle whose ApplicationStart sleeps `start_secs` and whose AfterInstall, when
/// `fail`, prints markup and a line to stderr and exits 3.
fn bundle(dir: &Path, start_secs: u32, fail: bool) {
    fs::create_dir_all(dir.join("scripts")).expect("mkdir");
    fs::write(
        dir.join("appspec.yml"),
        "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: scripts/after.sh\n  ApplicationStart:\n    - location: scripts/start.sh\n",
    )
    .expect("appspec");
    let after = if fail {
        format!("#!/bin/sh\necho '{MARKUP}'\necho 'database migration failed: no such table' >&2\nexit 3\n")
    } else {
        "#!/bin/sh\necho installed\n".to_owned()
    };
    let start = format!("#!/bin/sh\nsleep {start_secs}\necho started\n");
    for (name, body) in [("after.sh", after), ("start.sh", start)] {
        let p = dir.join("scripts").join(name);
        fs::write(&p, body).expect("script");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// Waits up to 60 s until the JavaScript expression `js` is true on the current page.
async fn until(c: &Client, what: &str, js: &str) {
    let t0 = Instant::now();
    loop {
        // A script error (an element not there yet) counts as not yet.
        let v = c.execute(&format!("return Boolean({js});"), vec![]).await;
        if matches!(v, Ok(serde_json::Value::Bool(true))) {
            return;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let page = c.source().await.unwrap_or_default();
            panic!("timed out waiting for {what} ({v:?}); the page:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("saving a screenshot");
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/deployments")).await.expect("goto");
    let url = c.current_url().await.expect("url");
    assert_eq!(
        url.path(),
        "/sign-in",
        "signed out, a page sends to the sign-in form"
    );
    c.find(Locator::Css("#token"))
        .await
        .expect("the token field")
        .send_keys(token)
        .await
        .expect("typing the token");
    c.find(Locator::Css("form[action='/sign-in'] button"))
        .await
        .expect("the sign-in button")
        .click()
        .await
        .expect("signing in");
    until(c, "the deployments page", "document.querySelector('h1') && document.querySelector('h1').textContent === 'Deployments'").await;
}

/// Sets a mark on the page's window: still there later means the page was not reloaded.
async fn mark(c: &Client) {
    c.execute("window.hoistMark = 42; return true;", vec![])
        .await
        .expect("marking the page");
}

async fn still_marked(c: &Client) -> bool {
    c.execute("return window.hoistMark === 42;", vec![])
        .await
        .expect("reading the mark")
        == serde_json::Value::Bool(true)
}

fn deploy(coordinator: &Coordinator, revision: &str) -> String {
    coordinator.hoist_ok(&[
        "deploy",
        "create",
        "--app",
        "shop",
        "--group",
        "web",
        "--revision",
        revision,
    ])
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs chromium: the dashboard is tested in a real browser"]
async fn the_dashboard_in_a_real_browser_follows_deployments_and_releases_and_refuses_a_viewer() {
    need_chromium();
    let s = Scratch::new();
    let coordinator = Coordinator::start(&s.join("coordinator"));
    let base = coordinator.url.clone();
    let token = coordinator.shop_web(&["--config", "OneAtATime"]);
    coordinator.hoist_ok(&[
        "group",
        "create",
        "production",
        "--app",
        "shop",
        "--tag",
        "role=prod",
    ]);
    let _web1 = Agent::start(&s, "web-1", &coordinator, &token, "role: web");
    let _web2 = Agent::start(&s, "web-2", &coordinator, &token, "role: web");
    let _prod = Agent::start(&s, "prod-1", &coordinator, &token, "role: prod");
    wait_for("three hosts online", Duration::from_secs(30), || {
        let out = coordinator.hoist(&["hosts", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["hosts"]
            .as_array()
            .is_some_and(|h| h.len() == 3 && h.iter().all(|h| h["online"] == true))
    });
    let pipeline = s.join("pipeline.yml");
    fs::write(
        &pipeline,
        "pipeline: shop-release\napplication: shop\nstages:\n  - group: web\n  - group: production\n    approval: manual\n",
    )
    .expect("pipeline file");
    coordinator.hoist_ok(&["pipeline", "apply", pipeline.to_str().expect("utf-8")]);
    let (good, bad, slow) = (s.join("good"), s.join("bad"), s.join("slow"));
    bundle(&good, 2, false);
    bundle(&bad, 0, true);
    bundle(&slow, 120, false);
    let good = coordinator.push(&good);
    let bad = coordinator.push(&bad);
    let slow = coordinator.push(&slow);

    let driver = ChromeDriver::start();
    let c = ClientBuilder::new(HttpConnector::new())
        .capabilities(chromium_capabilities())
        .connect(&driver.url)
        .await
        .expect("a Chromium session");

    // Sign in, then watch a deployment go from in progress to succeeded on one page load.
    sign_in(&c, &base, OPERATOR_TOKEN).await;
    let id = deploy(&coordinator, &good);
    c.goto(&format!("{base}/deployments/{id}"))
        .await
        .expect("goto");
    mark(&c).await;
    let first = text_of(&c, "#state").await;
    assert!(
        first == "in progress" || first == "created",
        "the deployment just started: {first}"
    );
    until(
        &c,
        "the deployment succeeds on the page",
        "document.querySelector('#state').textContent === 'succeeded'",
    )
    .await;
    assert!(
        still_marked(&c).await,
        "the page was updated in place, not reloaded"
    );
    let hosts = c
        .find_all(Locator::Css("section.host[data-state='succeeded']"))
        .await
        .expect("hosts");
    assert_eq!(hosts.len(), 2, "both web hosts succeeded");
    shot(&c, "deployment").await;
    c.goto(&format!("{base}/deployments")).await.expect("goto");
    let row = text_of(
        &c,
        &format!("#deployments tr:has(a[href='/deployments/{id}'])"),
    )
    .await;
    assert!(
        row.contains("succeeded") && row.contains("2 succeeded"),
        "{row}"
    );
    shot(&c, "deployments").await;

    // A failed host: its failing event, script, exit code and log tail, markup as text.
    let failed = deploy(&coordinator, &bad);
    c.goto(&format!("{base}/deployments/{failed}"))
        .await
        .expect("goto");
    until(
        &c,
        "the deployment fails",
        "document.querySelector('#state').textContent === 'failed'",
    )
    .await;
    let host = "section.host[data-state='failed']";
    assert_eq!(
        text_of(&c, &format!("{host} .failed-event")).await,
        "AfterInstall"
    );
    assert_eq!(text_of(&c, &format!("{host} .exit-code")).await, "3");
    let log = text_of(&c, &format!("{host} pre.log")).await;
    assert!(log.contains("database migration failed"), "{log}");
    assert!(
        log.contains(MARKUP),
        "the script's markup is shown as text: {log}"
    );
    let injected = c
        .execute(
            "return document.querySelectorAll('main script, main img').length;",
            vec![],
        )
        .await
        .expect("counting elements");
    assert_eq!(
        injected,
        serde_json::json!(0),
        "no element came from the script's output"
    );
    assert!(
        c.get_alert_text().await.is_err(),
        "no script of the output ran"
    );
    c.execute(
        &format!("document.querySelector(\"{host}\").scrollIntoView(); return true;"),
        vec![],
    )
    .await
    .expect("scrolling to the failed host");
    let png = c
        .find(Locator::Css(host))
        .await
        .expect("the failed host")
        .screenshot()
        .await
        .expect("screenshot");
    fs::write(screenshot_dir().join("failed-host.png"), png).expect("saving a screenshot");

    // A release: the web stage deploys, the gate waits; approving starts production.
    let release = coordinator.hoist_ok(&[
        "release",
        "create",
        "--pipeline",
        "shop-release",
        "--revision",
        &good,
    ]);
    c.goto(&format!("{base}/releases/{release}"))
        .await
        .expect("goto");
    mark(&c).await;
    until(
        &c,
        "the approve button at the gate",
        "document.querySelector(\"form[action$='/approve'] button\") !== null",
    )
    .await;
    assert!(still_marked(&c).await, "the gate appeared without a reload");
    shot(&c, "release-gate").await;
    c.find(Locator::Css("form[action$='/approve'] button"))
        .await
        .expect("approve")
        .click()
        .await
        .expect("approving");
    until(
        &c,
        "production starts",
        "(() => { const s = document.querySelector(\"li[data-group='production']\"); return s && ['deploying', 'succeeded'].includes(s.dataset.state) && s.querySelector(\"a[href^='/deployments/']\") !== null; })()",
    )
    .await;
    let gate = text_of(&c, "li[data-group='production']").await;
    assert!(gate.contains("approved by"), "{gate}");
    until(
        &c,
        "the release succeeds",
        "document.querySelector('#state').textContent === 'succeeded'",
    )
    .await;
    shot(&c, "release").await;

    c.goto(&format!("{base}/hosts")).await.expect("goto");
    let hosts = text_of(&c, "#hosts").await;
    for h in ["web-1", "web-2", "prod-1"] {
        assert!(hosts.contains(h), "{hosts}");
    }
    shot(&c, "hosts").await;
    c.goto(&format!("{base}/applications")).await.expect("goto");
    let apps = text_of(&c, "main").await;
    assert!(
        apps.contains("role=prod") && apps.contains("in sync"),
        "{apps}"
    );
    shot(&c, "applications").await;

    // A viewer sees no stop button and is refused when it posts anyway.
    let running = deploy(&coordinator, &slow);
    let viewer = coordinator.hoist_ok(&[
        "token",
        "create",
        "--operator",
        "--role",
        "viewer",
        "--name",
        "vic",
    ]);
    c.find(Locator::Css("form[action='/sign-out'] button"))
        .await
        .expect("sign out")
        .click()
        .await
        .expect("signing out");
    sign_in(&c, &base, &viewer).await;
    c.goto(&format!("{base}/deployments/{running}"))
        .await
        .expect("goto");
    until(
        &c,
        "the slow deployment runs",
        "document.querySelector('#state').textContent === 'in progress'",
    )
    .await;
    let buttons = c.find_all(Locator::Css("main form")).await.expect("forms");
    assert!(buttons.is_empty(), "a viewer is shown no button");
    let status = c
        .execute(
            &format!("return fetch('/deployments/{running}/stop', {{method: 'POST', headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body: 'csrf=' + document.querySelector(\"input[name='csrf']\").value}}).then(r => r.status);"),
            vec![],
        )
        .await
        .expect("posting as a viewer");
    assert_eq!(status, serde_json::json!(403));
    assert_eq!(
        text_of(&c, "#state").await,
        "in progress",
        "nothing was stopped"
    );

    // An admin stops it from its page.
    c.find(Locator::Css("form[action='/sign-out'] button"))
        .await
        .expect("sign out")
        .click()
        .await
        .expect("signing out");
    sign_in(&c, &base, OPERATOR_TOKEN).await;
    c.goto(&format!("{base}/deployments/{running}"))
        .await
        .expect("goto");
    c.find(Locator::Css(&format!(
        "form[action='/deployments/{running}/stop'] button"
    )))
    .await
    .expect("the stop button")
    .click()
    .await
    .expect("stopping");
    until(
        &c,
        "the deployment is stopped",
        "document.querySelector('#state').textContent === 'stopped'",
    )
    .await;
    let d = coordinator.hoist_ok(&["deploy", "status", &running, "--json"]);
    assert!(
        d.contains("\"state\":\"stopped\"") || d.contains("\"state\": \"stopped\""),
        "{d}"
    );
    c.close().await.expect("closing the browser");
}
