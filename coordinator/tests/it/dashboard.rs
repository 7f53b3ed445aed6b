//! The dashboard over HTTP against the real server: signing in gives a strict, HttpOnly,
//! expiring session cookie (Secure under TLS) kept hashed and surviving a restart; pages
//! need it and carry the security headers; every button's post needs the session's CSRF
//! token and the role `api::roles` names (a viewer sees no button and is refused);
//! approving at a gate records the session's token name; text from hosts is escaped.
//! The real browser's side is the e2e `dashboard` suite.

use hoist_protocol::agent::{CommandStatus, EventStatus, ReportBody};
use hoist_protocol::operator::{DeploymentState, ReleaseState};

use crate::support::{bundle_dir, setup, tags, Launch, Scratch, Server, SimHost, TOKEN};

/// A browser's view of the dashboard: no redirects followed, the session cookie sent by
/// hand.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser::with(base, reqwest::Client::builder())
    }

    fn with(base: &str, b: reqwest::ClientBuilder) -> Browser {
        Browser {
            http: b
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookie: None,
        }
    }

    /// Posts the sign-in form; the answer (its cookie kept when it set one).
    async fn sign_in(&mut self, token: &str) -> reqwest::Response {
        let resp = self
            .http
            .post(format!("{}/sign-in", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap();
        if let Some(c) = resp.headers().get("set-cookie") {
            let pair = c.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = Some(pair);
        }
        resp
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.cookie {
            Some(c) => r.header("cookie", c),
            None => r,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.req(reqwest::Method::GET, path).send().await.unwrap()
    }

    /// A page's HTML, asserting it answered 200.
    async fn page(&self, path: &str) -> String {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.text().await.unwrap()
    }

    async fn post(&self, path: &str, csrf: Option<&str>) -> reqwest::Response {
        self.req(reqwest::Method::POST, path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(csrf.map_or(String::new(), |c| format!("csrf={c}")))
            .send()
            .await
            .unwrap()
    }
}

/// The CSRF token a page's forms carry.
fn csrf(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + 64].to_owned()
}

fn location(resp: &reqwest::Response) -> &str {
    resp.headers()
        .get("location")
        .map_or("", |v| v.to_str().unwrap())
}

async fn operator_token(server: &Server, role: &str, name: &str) -> String {
    server
        .hoist(&[
            "token",
            "create",
            "--operator",
            "--role",
            role,
            "--name",
            name,
        ])
        .await
        .ok()
        .to_owned()
}

/// shop/web with one simulated host whose deployment is in progress (handed to it).
async fn running(s: &Scratch) -> (Server, SimHost, String) {
    let server = Server::start(&s.join("data"));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let host = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let dir = bundle_dir(&s.join("b"), "v1");
    let revision = server.push(dir.to_str().unwrap(), "shop").await;
    let id = server.deploy("shop", "web", &revision).await;
    let cmd = host.poll(5).await.expect("the deployment's command");
    host.report(
        &cmd.command_id,
        1,
        ReportBody::EventStarted {
            event: "Install".into(),
        },
    )
    .await;
    (server, host, id)
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_expiring_cookie_and_every_page_needs_it() {
    let s = Scratch::new();
    let (server, _host, id) = running(&s).await;
    let mut b = Browser::new(&server.url);
    for path in ["/", "/deployments", "/hosts", "/applications", "/pipelines"] {
        let resp = b.get(path).await;
        assert_eq!(resp.status(), 303, "GET {path} signed out");
        let to = location(&resp);
        assert!(to == "/sign-in" || to == "/deployments", "GET {path}: {to}");
    }
    let form = b.page("/sign-in").await;
    assert!(form.contains(r#"name="token""#), "{form}");

    let wrong = b.sign_in("hot_wrong").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(b.cookie.is_none());

    let ok = b.sign_in(TOKEN).await;
    assert_eq!((ok.status().as_u16(), location(&ok)), (303, "/deployments"));
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");

    for path in [
        "/deployments".to_owned(),
        format!("/deployments/{id}"),
        "/deployments?application=shop&group=web".to_owned(),
        "/hosts".to_owned(),
        "/applications".to_owned(),
        "/pipelines".to_owned(),
    ] {
        let resp = b.get(&path).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let html = resp.text().await.unwrap();
        assert!(!html.contains("<script>"), "no inline script on {path}");
        assert!(
            html.contains(r#"<script src="/assets/dashboard.js""#),
            "{path}"
        );
    }
    let page = b.page(&format!("/deployments/{id}")).await;
    assert!(page.contains("1 running, 0 waiting"), "the batch: {page}");
    assert!(page.contains("OneAtATime"), "the rollout: {page}");
    let list = b.page("/deployments?application=shop").await;
    assert!(list.contains(&id), "{list}");
    let other = b.page("/deployments?group=nope").await;
    assert!(!other.contains(&id), "filtered out by group");
    let js = b.get("/assets/dashboard.js").await;
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));

    // Signing out needs the CSRF token too; afterwards the cookie is worth nothing.
    let page = b.page("/deployments").await;
    let refused = b.post("/sign-out", None).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(b.get("/deployments").await.status(), 200);
    let out = b.post("/sign-out", Some(&csrf(&page))).await;
    assert_eq!((out.status().as_u16(), location(&out)), (303, "/sign-in"));
    assert_eq!(b.get("/deployments").await.status(), 303);
}

#[tokio::test]
async fn a_post_without_the_sessions_csrf_token_or_with_a_viewers_role_changes_nothing() {
    let s = Scratch::new();
    let (server, _host, id) = running(&s).await;
    let stop = format!("/deployments/{id}/stop");
    let mut admin = Browser::new(&server.url);
    admin.sign_in(TOKEN).await;
    let mut other = Browser::new(&server.url);
    other.sign_in(TOKEN).await;
    let others_csrf = csrf(&other.page("/deployments").await);

    assert_eq!(admin.post(&stop, None).await.status(), 403);
    assert_eq!(admin.post(&stop, Some(&others_csrf)).await.status(), 403);
    assert_eq!(admin.post(&stop, Some(&"0".repeat(64))).await.status(), 403);

    let viewer_token = operator_token(&server, "viewer", "vic").await;
    let mut viewer = Browser::new(&server.url);
    viewer.sign_in(&viewer_token).await;
    let page = viewer.page(&format!("/deployments/{id}")).await;
    assert!(
        !page.contains("Stop deployment"),
        "a viewer sees no stop button"
    );
    let refused = viewer.post(&stop, Some(&csrf(&page))).await;
    assert_eq!(refused.status(), 403);
    let why = refused.text().await.unwrap();
    assert!(why.contains("viewer") && why.contains("deployer"), "{why}");
    assert_eq!(
        server.deployment(&id).await.state,
        DeploymentState::InProgress,
        "nothing was stopped"
    );

    let deployer_token = operator_token(&server, "deployer", "dee").await;
    let mut deployer = Browser::new(&server.url);
    deployer.sign_in(&deployer_token).await;
    let page = deployer.page(&format!("/deployments/{id}")).await;
    assert!(page.contains("Stop deployment"), "{page}");
    let hosts = deployer.page("/hosts").await;
    assert!(!hosts.contains("Accept"), "accepting tags is an admin's");
    let stopped = deployer.post(&stop, Some(&csrf(&page))).await;
    assert_eq!(stopped.status(), 303);
    assert_eq!(server.deployment(&id).await.state, DeploymentState::Stopped);
}

#[tokio::test]
async fn a_session_survives_a_restart_is_kept_hashed_and_ends_with_its_token() {
    let s = Scratch::new();
    let data = s.join("data");
    let mut server = Server::start(&data);
    let token = operator_token(&server, "viewer", "vic").await;
    let mut b = Browser::new(&server.url);
    b.sign_in(&token).await;
    let cookie = b.cookie.clone().unwrap();
    let secret = cookie.strip_prefix("hoist_session=").unwrap().to_owned();
    assert!(secret.len() > 40, "{secret}");
    b.page("/hosts").await;

    server.stop().await;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(&secret),
                "session secret in {}",
                path.display()
            );
            assert!(
                !text.contains(&token),
                "operator token in {}",
                path.display()
            );
        }
    }
    let server = Server::start(&data);
    let mut b2 = Browser::new(&server.url);
    b2.cookie = Some(cookie);
    let page = b2.page("/hosts").await;
    assert!(page.contains("vic"), "signed in as vic after the restart");

    let id = server
        .hoist(&["token", "list", "--json"])
        .await
        .ok()
        .split('"')
        .find(|w| w.starts_with("op-"))
        .unwrap()
        .to_owned();
    server.hoist(&["token", "revoke", &id]).await.ok();
    let resp = b2.get("/hosts").await;
    assert_eq!(
        (resp.status().as_u16(), location(&resp)),
        (303, "/sign-in"),
        "a revoked token's session is signed out"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn under_tls_the_session_cookie_is_secure() {
    let s = Scratch::new();
    let data = s.join("data");
    let server = Server::launch(
        &data,
        Launch {
            listen: "0.0.0.0:0",
            ..Launch::default()
        },
    );
    let pem = std::fs::read(data.join("tls/cert.pem")).unwrap();
    let mut b = Browser::with(
        &server.url,
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap()),
    );
    let resp = b.sign_in(TOKEN).await;
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(b.page("/deployments").await.contains("Deployments"));
}

#[tokio::test]
async fn script_output_and_operator_text_are_shown_as_text() {
    let s = Scratch::new();
    let (server, host, id) = running(&s).await;
    let cmd_id = server.deployment(&id).await.hosts[0].command_id.clone();
    let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    host.report(
        &cmd_id,
        2,
        ReportBody::EventEnded {
            event: "Install".into(),
            status: EventStatus::Failed,
            error_code: None,
            message: Some(format!("message {evil}")),
            script: Some(format!("scripts/{evil}.sh")),
            exit_code: Some(7),
            log_tail: Some(format!("line one\n{evil}\n")),
            duration_ms: 3,
        },
    )
    .await;
    host.report(
        &cmd_id,
        3,
        ReportBody::Completed {
            status: CommandStatus::Failed,
            failed_event: Some("Install".into()),
            message: Some(evil.into()),
        },
    )
    .await;
    server.wait_state(&id, "failed").await;
    let mut b = Browser::new(&server.url);
    b.sign_in(TOKEN).await;
    let page = b.page(&format!("/deployments/{id}")).await;
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(page.contains("line one"), "{page}");

    // Names and tags with markup never get in: registration refuses them, naming them.
    let reg = server.hoist(&["token", "create"]).await.ok().to_owned();
    for (name, tag) in [("<b>x</b>", "ok"), ("web-2", "<i>")] {
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/hosts/register", server.url))
            .bearer_auth(&reg)
            .json(&serde_json::json!({"name": name, "tags": {"role": tag}, "agent_version": "1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{name} {tag}");
    }
}

#[tokio::test]
async fn approving_at_a_gate_from_the_dashboard_records_the_tokens_name() {
    let s = Scratch::new();
    let server = Server::start(&s.join("data"));
    server.hoist(&["app", "create", "shop"]).await.ok();
    server
        .hoist(&[
            "group",
            "create",
            "production",
            "--app",
            "shop",
            "--tag",
            "env=prod",
        ])
        .await
        .ok();
    let reg = server.hoist(&["token", "create"]).await.ok().to_owned();
    let prod = SimHost::register(&server.url, &reg, "prod-1", tags(&[("env", "prod")])).await;
    let file = s.join("p.yml");
    std::fs::write(
        &file,
        "pipeline: rel\napplication: shop\nstages:\n  - group: production\n    approval: manual\n",
    )
    .unwrap();
    server
        .hoist(&["pipeline", "apply", file.to_str().unwrap()])
        .await
        .ok();
    let dir = bundle_dir(&s.join("b"), "v1");
    let revision = server.push(dir.to_str().unwrap(), "shop").await;
    let id = server
        .hoist(&[
            "release",
            "create",
            "--pipeline",
            "rel",
            "--revision",
            &revision,
        ])
        .await
        .ok()
        .to_owned();

    let viewer_token = operator_token(&server, "viewer", "vic").await;
    let mut viewer = Browser::new(&server.url);
    viewer.sign_in(&viewer_token).await;
    let page = viewer.page(&format!("/releases/{id}")).await;
    assert!(page.contains("awaiting approval"), "{page}");
    assert!(!page.contains("Approve"), "a viewer sees no approve button");
    let refused = viewer
        .post(&format!("/releases/{id}/approve"), Some(&csrf(&page)))
        .await;
    assert_eq!(refused.status(), 403);

    let deployer_token = operator_token(&server, "deployer", "ana").await;
    let mut b = Browser::new(&server.url);
    b.sign_in(&deployer_token).await;
    let page = b.page(&format!("/releases/{id}")).await;
    assert!(
        page.contains("Approve") && page.contains("Reject"),
        "{page}"
    );
    let resp = b
        .req(reqwest::Method::POST, &format!("/releases/{id}/approve"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={}&comment=%3Cb%3Eship%20it%3C%2Fb%3E",
            csrf(&page)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (resp.status().as_u16(), location(&resp)),
        (303, format!("/releases/{id}").as_str())
    );
    let cmd = prod.poll(5).await.expect("production starts once approved");
    prod.run(&cmd, true).await;
    let page = b.page(&format!("/releases/{id}")).await;
    assert!(page.contains("approved by ana at"), "{page}");
    assert!(
        page.contains("comment: &lt;b&gt;ship it&lt;/b&gt;"),
        "{page}"
    );
    let r: hoist_protocol::operator::Release = serde_json::from_str(
        server
            .hoist(&["release", "status", &id, "--json"])
            .await
            .ok(),
    )
    .unwrap();
    assert_eq!(r.stages[0].approved_by.as_deref(), Some("ana"));
    assert_ne!(r.state, ReleaseState::AwaitingApproval);

    // The gate's other button rejects, under the same name.
    let next = server
        .hoist(&[
            "release",
            "create",
            "--pipeline",
            "rel",
            "--revision",
            &revision,
        ])
        .await
        .ok()
        .to_owned();
    let page = b.page(&format!("/releases/{next}")).await;
    let resp = b
        .post(&format!("/releases/{next}/reject"), Some(&csrf(&page)))
        .await;
    assert_eq!(resp.status(), 303);
    let r: hoist_protocol::operator::Release = serde_json::from_str(
        server
            .hoist(&["release", "status", &next, "--json"])
            .await
            .ok(),
    )
    .unwrap();
    assert_eq!(r.state, ReleaseState::Rejected);
    assert_eq!(r.stages[0].rejected_by.as_deref(), Some("ana"));
    assert!(b
        .page(&format!("/releases/{next}"))
        .await
        .contains("rejected by ana at"));
}

#[tokio::test]
async fn tag_changes_are_accepted_by_an_admin_and_an_out_of_sync_host_retried_by_a_deployer() {
    let s = Scratch::new();
    let server = Server::start(&s.join("data"));
    let reg = setup(&server, "shop", "web", &["--tag", "role=web"]).await;
    let web = SimHost::register(&server.url, &reg, "web-1", tags(&[("role", "web")])).await;
    let db = SimHost::register(&server.url, &reg, "db-1", tags(&[("role", "db")])).await;
    let mut moved = db.clone();
    moved.tags = tags(&[("role", "web"), ("zone", "b")]);
    assert!(moved.poll(0).await.is_none());

    let deployer_token = operator_token(&server, "deployer", "dee").await;
    let mut deployer = Browser::new(&server.url);
    deployer.sign_in(&deployer_token).await;
    let mut admin = Browser::new(&server.url);
    admin.sign_in(TOKEN).await;
    let accept = format!("/hosts/{}/accept", db.id);
    let page = deployer.page("/hosts").await;
    assert!(
        page.contains("waiting: "),
        "the requested tags are shown: {page}"
    );
    assert!(!page.contains(&accept), "accepting tags is an admin's");
    assert_eq!(
        deployer.post(&accept, Some(&csrf(&page))).await.status(),
        403
    );
    let page = admin.page("/hosts").await;
    assert!(page.contains(&accept), "{page}");
    assert_eq!(
        admin.post(&accept, None).await.status(),
        403,
        "no CSRF token"
    );
    let done = admin.post(&accept, Some(&csrf(&page))).await;
    assert_eq!((done.status().as_u16(), location(&done)), (303, "/hosts"));
    let listed = server
        .hoist(&["hosts", "list", "--json"])
        .await
        .ok()
        .to_owned();
    let hosts: hoist_protocol::operator::HostList = serde_json::from_str(&listed).unwrap();
    let h = hosts.hosts.iter().find(|h| h.name == "db-1").unwrap();
    assert_eq!(h.tags, tags(&[("role", "web"), ("zone", "b")]));
    assert_eq!(h.requested_tags, None);

    // A command of an operator's deployment fails: its host is out of sync, held, until
    // retried.
    let dir = bundle_dir(&s.join("b"), "v1");
    let revision = server.push(dir.to_str().unwrap(), "shop").await;
    let id = server.deploy("shop", "web", &revision).await;
    // One host at a time: whichever is handed the first command fails it.
    let mut tries = 0;
    let (failed, cmd) = loop {
        tries += 1;
        assert!(tries <= 20, "no host was handed the deployment's command");
        if let Some(c) = web.poll(1).await {
            break (&web, c);
        }
        if let Some(c) = moved.poll(1).await {
            break (&moved, c);
        }
    };
    failed.run(&cmd, false).await;
    server.wait_state(&id, "failed").await;
    let retry = format!("/hosts/{}/retry", failed.id);
    let viewer_token = operator_token(&server, "viewer", "vic").await;
    let mut viewer = Browser::new(&server.url);
    viewer.sign_in(&viewer_token).await;
    let page = viewer.page("/hosts").await;
    assert!(
        page.contains("out sync") || page.contains("out of sync"),
        "{page}"
    );
    assert!(!page.contains(&retry), "a viewer sees no retry");
    let page = deployer.page("/hosts").await;
    assert!(page.contains(&retry), "{page}");
    let done = deployer.post(&retry, Some(&csrf(&page))).await;
    assert_eq!(done.status(), 303);
    let page = deployer.page("/hosts").await;
    assert!(!page.contains(&retry), "no longer held out of sync: {page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhooks_page_shows_deliveries_as_text_and_only_to_admins() {
    let s = Scratch::new();
    let (server, _host, id) = running(&s).await;
    // A receiver answering 500 with markup, which ends up in the delivery's last error.
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async {
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "<script>alert(1)</script>",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let webhook = server
        .hoist(&[
            "webhook",
            "create",
            "--app",
            "shop",
            "--url",
            &url,
            "--secret",
            "0123456789abcdef",
        ])
        .await
        .ok()
        .to_owned();
    server.hoist(&["deploy", "stop", &id]).await.ok();
    let mut admin = Browser::new(&server.url);
    admin.sign_in(TOKEN).await;
    let start = std::time::Instant::now();
    let html = loop {
        let html = admin.page("/webhooks").await;
        if html.contains("answered 500") {
            break html;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{html}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(html.contains(&webhook), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(html.contains("stopped"), "{html}");
    assert!(
        !html.contains("0123456789abcdef"),
        "never the secret: {html}"
    );
    assert!(admin
        .page("/deployments")
        .await
        .contains(r#"href="/webhooks""#));

    let viewer_token = operator_token(&server, "viewer", "vera").await;
    let mut viewer = Browser::new(&server.url);
    viewer.sign_in(&viewer_token).await;
    assert!(!viewer
        .page("/deployments")
        .await
        .contains(r#"href="/webhooks""#));
    let resp = viewer.get("/webhooks").await;
    assert_eq!(resp.status(), 403);
    assert!(!resp.text().await.unwrap().contains(&url));
}
