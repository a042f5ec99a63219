//! The embedded default end to end: the server binary with no backend configured
//! (in-memory gate and log, SQLite store), a flash sale, a restart, and the gate
//! still knows who holds a coupon.

mod support;

use std::path::Path;

use support::{Client, Proc, SECRET, check_invariants, flash_sale, free_port, stored_rows, temp_dir};

fn start(dir: &Path, port: u16, db: &str) -> Proc {
    Proc::start(
        Path::new(env!("CARGO_BIN_EXE_coupon-server")),
        "server",
        dir,
        &[
            ("COUPON_LISTEN", format!("127.0.0.1:{port}")),
            ("COUPON_JWT_SECRET", SECRET.to_owned()),
            ("COUPON_DATABASE_URL", db.to_owned()),
            ("COUPON_USER_RATE_LIMIT", "0".to_owned()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_embedded_flash_sale_survives_a_restart() {
    const STOCK: u64 = 400;
    let dir = temp_dir("coupon-embedded");
    let db = format!("sqlite://{}?mode=rwc", dir.join("coupon.db").display());
    let port = free_port();
    let client = Client::new(port);

    let mut server = start(&dir, port, &db);
    client.wait_ready(&mut server).await;
    let campaign = client.open_campaign(STOCK).await;
    let sale = flash_sale(&client, &campaign, "embedded", 1_600, 10, 64).await;
    println!("embedded sale: {:?}", sale.answers);
    assert_eq!(sale.issued.len() as u64, STOCK, "{:?}", sale.answers);
    assert_eq!(
        sale.count("409 already_issued") + sale.count("410 sold_out") + STOCK,
        1_600 + 160
    );
    // after-store: every 201 is in SQLite before the answer.
    check_invariants(STOCK, &sale, &stored_rows(&db, &campaign).await);
    server.terminate().await;

    let mut server = start(&dir, port, &db);
    client.wait_ready(&mut server).await;
    let again = flash_sale(&client, &campaign, "embedded", 1_600, 0, 64).await;
    assert!(
        again.issued.is_empty(),
        "nobody gets a coupon after the restart: {:?}",
        again.answers
    );
    assert_eq!(
        again.count("409 already_issued"),
        STOCK,
        "the restored gate knows every holder: {:?}",
        again.answers
    );
    assert_eq!(again.count("410 sold_out"), 1_600 - STOCK);
    let (status, view) = client
        .send(reqwest::Method::GET, &format!("/v1/campaigns/{campaign}"), None, None)
        .await;
    assert_eq!(
        (status, view["remaining"].as_u64(), view["issued"].as_u64()),
        (200, Some(0), Some(STOCK)),
        "{view}"
    );
    check_invariants(STOCK, &sale, &stored_rows(&db, &campaign).await);
    server.terminate().await;
}
