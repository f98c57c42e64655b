//! Row 3: a million backups in bounded memory, to fast and slow clients, and cancellation
//! storms.

use std::path::Path;
use std::time::Duration;

use backupgw::pb;
use backupgw::pb::backup_gateway_client::BackupGatewayClient;
use tonic::transport::Channel;

use super::harness::*;

/// Row 3: 1,000,000 backups (1,000 targets × 1,000), no latency, cache bounded at 64 MiB.
pub async fn memory(quick: bool, dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let everything = pb::ListBackupsRequest::default();
    let big_dir = dir.join("big");
    std::fs::create_dir_all(&big_dir).unwrap();
    let big = start_sim(
        &big_dir,
        &[
            "--regions",
            "4",
            "--projects-per-region",
            "250",
            "--instances-per-project",
            "10",
            "--backups-per-instance",
            "100",
        ],
    );
    // With no latency, 16 requests at once keep both cores busy; each target read at once
    // costs memory of its own (its de-duplication set, the pages it has fetched), so the
    // defaults (64 and 64) are measured too.
    let limits = |at_once: usize| {
        format!(
            "[limits]\nmax_concurrent_requests = {at_once}\nmax_concurrent_targets = {at_once}\nmax_pages_per_target = 2\n[cache]\nttl_seconds = 3600\nmax_bytes = 67108864"
        )
    };
    // Every limit at its default (8 pages a target): what a call holds past its targets' first
    // pages is bounded by the call (`max_concurrent_requests`), not by targets × pages.
    let defaults = "[cache]\nttl_seconds = 3600\nmax_bytes = 67108864".to_owned();
    for (config, name) in [
        (
            limits(16),
            "1,000,000 backups to a fast client, 16 requests and 16 targets at once: gateway peak RSS",
        ),
        (
            limits(64),
            "  the same with the defaults, 64 requests and 64 targets at once",
        ),
        (
            defaults,
            "  the same with every limit at its default (8 pages of a target at once)",
        ),
    ] {
        let mut gw = start_gateway(&big, &config).await;
        let (n, secs) = stream_all(&mut gw.client, everything.clone(), None, None).await;
        assert_eq!(n, 1_000_000);
        rows.push(Row {
            name: name.into(),
            value: format!(
                "{:.0} MiB ({:.1} s, {:.0} k backups/s cold)",
                peak_rss_mib(gw.proc.pid()),
                secs,
                n as f64 / secs / 1e3
            ),
            target: "< 100 MiB".into(),
        });
    }
    let mut gw = start_gateway(&big, &limits(16)).await;
    let slow_for = Duration::from_secs(if quick { 3 } else { 10 });
    let (n, _) = stream_all(
        &mut gw.client,
        everything,
        Some(Duration::from_millis(5)),
        Some(slow_for),
    )
    .await;
    rows.push(Row {
        name: format!(
            "  to a slow client (5 ms a message, {} s)",
            slow_for.as_secs()
        ),
        value: format!(
            "{:.0} MiB after {} k backups",
            peak_rss_mib(gw.proc.pid()),
            n / 1000
        ),
        target: "bounded".into(),
    });
    drop(gw);

    rows.extend(storms(&big).await);
    drop(big);
    rows
}

/// Cancellation storms: 500 inventories, 50 at a time, each cancelled after its first
/// message. Once freed memory is given back (src/memory.rs), what stays resident is the page
/// cache, up to its bound: the same storm with a 1 MiB cache leaves the gateway near its
/// starting size.
pub async fn storms(big: &Sim) -> Vec<Row> {
    let mut rows = Vec::new();
    for (cache_mib, name) in [
        (
            64,
            "500 inventories cancelled after their first message: RSS after (peak), 64 MiB cache",
        ),
        (1, "  the same with a 1 MiB cache"),
    ] {
        let config = format!(
            "[limits]\nmax_pages_per_target = 2\n[cache]\nttl_seconds = 3600\nmax_bytes = {}",
            cache_mib << 20
        );
        let gw = start_gateway(big, &config).await;
        let before = rss_mib(gw.proc.pid());
        for _ in 0..10 {
            // A connection per round: hyper's client closes a connection on which it cancelled
            // ~1,000 streams itself (its guard against reset floods).
            let channel = Channel::from_shared(gw.url.clone())
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut storm = tokio::task::JoinSet::new();
            for _ in 0..50 {
                let mut client = BackupGatewayClient::new(channel.clone());
                let everything = pb::ListBackupsRequest::default();
                storm.spawn(async move {
                    let mut stream = client.list_backups(everything).await.unwrap().into_inner();
                    stream.message().await.unwrap();
                });
            }
            while storm.join_next().await.is_some() {}
        }
        // Freed memory is given back every 5 s after calls ended.
        tokio::time::sleep(Duration::from_secs(6)).await;
        rows.push(Row {
            name: name.into(),
            value: format!(
                "{:.0} MiB ({:.0}); {before:.0} MiB before",
                rss_mib(gw.proc.pid()),
                peak_rss_mib(gw.proc.pid())
            ),
            target: "≈ start + cache bound".into(),
        });
    }
    rows
}
