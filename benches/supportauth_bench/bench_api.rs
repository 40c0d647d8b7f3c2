//! Group `api`: an authenticated `ticket_list` (token over TCP loopback)
//! against the cheapest route of the same server (the 404 fallback for a
//! path outside /json-api/: no authentication, no store, no audit), with
//! 64 concurrent keep-alive clients for a bounded time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::common::Daemon;
use crate::util::{self, median_p99, Report};

struct Load {
    requests: usize,
    errors: usize,
    latencies_ms: Vec<f64>,
    secs: f64,
}

async fn client(
    port: u16,
    path: Arc<str>,
    auth: Option<Arc<str>>,
    expect: u16,
    until: Instant,
) -> (usize, Vec<f64>) {
    let mut lat = Vec::new();
    let mut errors = 0;
    'connect: while Instant::now() < until {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
            errors += 1;
            continue;
        };
        let Ok((mut tx, conn)) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
        else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let mut req = hyper::Request::get(&*path).header("host", "localhost");
            if let Some(a) = &auth {
                req = req.header("authorization", &**a);
            }
            let req = req.body(Empty::new()).expect("request");
            let t = Instant::now();
            let ok = match tx.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    resp.into_body().collect().await.is_ok() && status == expect
                }
                Err(_) => false,
            };
            if !ok {
                errors += 1;
                continue 'connect;
            }
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    (errors, lat)
}

fn load(
    rt: &tokio::runtime::Runtime,
    port: u16,
    path: &str,
    auth: Option<&str>,
    expect: u16,
    clients: usize,
    secs: u64,
) -> Load {
    let path: Arc<str> = path.into();
    let auth: Option<Arc<str>> = auth.map(Into::into);
    rt.block_on(async {
        let start = Instant::now();
        let until = start + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..clients)
            .map(|_| tokio::spawn(client(port, path.clone(), auth.clone(), expect, until)))
            .collect();
        let mut out = Load {
            requests: 0,
            errors: 0,
            latencies_ms: Vec::new(),
            secs: 0.0,
        };
        for t in tasks {
            let (e, l) = t.await.expect("client task");
            out.errors += e;
            out.requests += l.len();
            out.latencies_ms.extend(l);
        }
        out.secs = start.elapsed().as_secs_f64();
        out
    })
}

fn add(total: &mut Load, l: Load) {
    total.requests += l.requests;
    total.errors += l.errors;
    total.latencies_ms.extend(l.latencies_ms);
    total.secs += l.secs;
}

pub fn run(rt: &tokio::runtime::Runtime, report: &mut Report) {
    let clients = util::env_usize("SA_BENCH_API_CLIENTS", 64);
    let secs = util::env_usize("SA_BENCH_API_SECS", 3) as u64;
    let grants = util::env_usize("SA_BENCH_API_GRANTS", 10);
    report.section(&format!(
        "3. API overhead: {clients} keep-alive clients on TCP loopback, 2 x {secs} s per route, alternated (A B C, C B A)"
    ));
    let mut d = Daemon::start_with(
        "max_connections = 1024\nmax_connections_per_source = 1024\n",
        "[access]\nreconcile_interval_secs = 86400\n",
    );
    rt.block_on(crate::bench_scale::insert_ghost_grants(
        &d.database(),
        0,
        grants,
    ));
    // Restarts the daemon, which then loads the grants just inserted (it
    // keeps the live grants in memory and does not see writes by others).
    util::info_logging(&mut d);
    let token = d.create_token("token_name=bench&acl-0=tickets-list");
    let auth = format!("whm root:{token}");
    let list = "/json-api/ticket_list?api.version=1";
    let trivial = "/bench-trivial";
    // Where the difference goes: authentication alone (an unknown
    // function with a valid token: auth, dispatch, a result-0 envelope).
    let auth_only = "/json-api/bench_no_such_function?api.version=1";
    let empty = || Load {
        requests: 0,
        errors: 0,
        latencies_ms: Vec::new(),
        secs: 0.0,
    };
    let (mut t, mut a, mut o) = (empty(), empty(), empty());
    // Warm up every path, then alternate so drift hits all alike.
    load(rt, d.port, trivial, None, 404, clients, 1);
    load(rt, d.port, list, Some(&auth), 200, clients, 1);
    load(rt, d.port, auth_only, Some(&auth), 200, clients, 1);
    for round in 0..2 {
        let mut phases: Vec<(&mut Load, &str, Option<&str>, u16)> = vec![
            (&mut t, trivial, None, 404),
            (&mut a, list, Some(&auth), 200),
            (&mut o, auth_only, Some(&auth), 200),
        ];
        if round == 1 {
            phases.reverse();
        }
        for (total, path, auth, expect) in phases {
            add(total, load(rt, d.port, path, auth, expect, clients, secs));
        }
    }
    let rps = |l: &Load| l.requests as f64 / l.secs;
    let (tm, tp) = median_p99(&t.latencies_ms);
    let (am, ap) = median_p99(&a.latencies_ms);
    let (om, op) = median_p99(&o.latencies_ms);
    report.row(
        "trivial route (GET /bench-trivial -> 404 fallback, no auth)",
        format!("{:.0} req/s, median {tm:.2} ms, p99 {tp:.2} ms", rps(&t)),
        format!("{} errors", t.errors),
        "",
    );
    report.row(
        &format!("ticket_list with token auth ({grants} grants listed)"),
        format!("{:.0} req/s, median {am:.2} ms, p99 {ap:.2} ms", rps(&a)),
        format!(
            "{:.2}x the trivial route's req/s; p99 {:.1}x; {} errors",
            rps(&a) / rps(&t),
            ap / tp,
            a.errors
        ),
        &format!(">= 0.5x req/s: {}", util::verdict(rps(&a) / rps(&t) >= 0.5)),
    );
    report.row(
        "unknown function with token auth (auth + dispatch only)",
        format!("{:.0} req/s, median {om:.2} ms, p99 {op:.2} ms", rps(&o)),
        format!(
            "{:.2}x the trivial route's req/s; {} errors",
            rps(&o) / rps(&t),
            o.errors
        ),
        "",
    );
}
