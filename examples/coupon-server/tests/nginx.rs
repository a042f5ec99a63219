//! The shipped NGINX configuration (`deploy/nginx/coupon.conf.template`), rendered as
//! the nginx image would, run with Debian's real `nginx` in front of two server
//! processes: a burst past the limit gets 429 from NGINX, the rest reach the servers.

mod support;

use std::path::{Path, PathBuf};

use coupon_testkit::{Service, service};
use support::{Client, Proc, SECRET, free_port, temp_dir};

const TEMPLATE: &str = include_str!("../../../deploy/nginx/coupon.conf.template");

fn start_server(dir: &Path, name: &str, port: u16) -> Proc {
    Proc::start(
        Path::new(env!("CARGO_BIN_EXE_coupon-server")),
        name,
        dir,
        &[
            ("COUPON_LISTEN", format!("127.0.0.1:{port}")),
            ("COUPON_JWT_SECRET", SECRET.to_owned()),
            (
                "COUPON_DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.join(format!("{name}.db")).display()),
            ),
            ("COUPON_USER_RATE_LIMIT", "0".to_owned()),
        ],
    )
}

/// `${NAME}` replaced for each pair, as envsubst does with defined variables only.
fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    assert!(!out.contains("${"), "an unrendered variable is left:\n{out}");
    out
}

fn nginx_config(dir: &Path, listen: u16, upstreams: [u16; 2]) -> PathBuf {
    let site = render(
        TEMPLATE,
        &[
            ("LISTEN", format!("127.0.0.1:{listen}")),
            ("UPSTREAM_1", format!("127.0.0.1:{}", upstreams[0])),
            ("UPSTREAM_2", format!("127.0.0.1:{}", upstreams[1])),
            ("ISSUE_RATE", "1r/s".into()),
            ("API_RATE", "1r/s".into()),
            ("ISSUE_BURST", "5".into()),
        ],
    );
    std::fs::write(dir.join("coupon.conf"), site).unwrap();
    let d = dir.display();
    let main = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/coupon.conf;\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, main).unwrap();
    path
}

/// `coupon_http_requests_total` for one route and status, from a server's /metrics.
async fn served(client: &Client, route: &str, status: &str) -> u64 {
    let text = client.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("coupon_http_requests_total{"))
        .filter(|l| l.contains(&format!("route=\"{route}\"")) && l.contains(&format!("status=\"{status}\"")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_nginx_limits_a_burst_and_passes_the_rest() {
    let Some(nginx) = service(Service::Nginx).await else {
        return;
    };
    let dir = temp_dir("coupon-nginx");
    let ports = [free_port(), free_port()];
    let mut servers = [
        start_server(&dir, "server-1", ports[0]),
        start_server(&dir, "server-2", ports[1]),
    ];
    let direct = [Client::new(ports[0]), Client::new(ports[1])];
    for (client, server) in direct.iter().zip(servers.iter_mut()) {
        client.wait_ready(server).await;
    }

    let listen = free_port();
    let config = nginx_config(&dir, listen, ports);
    let check = std::process::Command::new(&nginx)
        .args(["-t", "-p"])
        .arg(&dir)
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let dir_arg = dir.display().to_string();
    let config_arg = config.display().to_string();
    let mut proxy = Proc::start_with_args(
        Path::new(&nginx),
        "nginx",
        &dir,
        &["-p", &dir_arg, "-c", &config_arg, "-g", "daemon off;"],
        &[],
    );
    let front = Client::new(listen);
    front.wait_ready(&mut proxy).await;

    let token = front.token("alice", None);
    let burst = (0..40).map(|_| {
        let front = front.clone();
        let token = token.clone();
        async move {
            let r = front
                .http
                .get(format!("{}/v1/me/coupons", front.base))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let by_nginx = r.headers().get("x-rate-limited-by").is_some_and(|v| v == "nginx");
            let retry_after = r.headers().contains_key("retry-after");
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, by_nginx, retry_after, body)
        }
    });
    let answers = futures::future::join_all(burst).await;
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    let passed = answers.iter().filter(|a| a.0 == 200).count() as u64;
    println!("burst of 40 through nginx: {passed} passed, {} limited", limited.len());
    assert_eq!(passed + limited.len() as u64, 40, "only 200 or 429: {answers:?}");
    assert!(!limited.is_empty(), "a burst past the limit is refused");
    assert!(passed >= 1, "requests within the limit pass");
    for (_, by_nginx, retry_after, body) in &limited {
        assert!(*by_nginx && *retry_after, "429 from NGINX with Retry-After");
        assert_eq!(body["error"], "rate_limited");
    }
    let reached = served(&direct[0], "/v1/me/coupons", "200").await + served(&direct[1], "/v1/me/coupons", "200").await;
    assert_eq!(
        reached, passed,
        "every request NGINX passed reached a server, and no refused one did"
    );

    proxy.terminate().await;
    for s in servers {
        s.terminate().await;
    }
}
