//! Many targets in one process.

use std::path::Path;
use std::time::Instant;

use backupgw::pb;

use super::harness::*;
/// Many targets in one process, with the default configuration.
pub async fn scale(dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, per_region, instances, backups, goal) in [
        (
            "100,000 targets × 3 backups",
            "25000",
            "1",
            "3",
            "< 256 MiB",
        ),
        (
            "10,000 targets × 300 backups",
            "2500",
            "10",
            "30",
            "< 100 MiB",
        ),
    ] {
        let sim = start_sim(
            dir,
            &[
                "--regions",
                "4",
                "--projects-per-region",
                per_region,
                "--instances-per-project",
                instances,
                "--backups-per-instance",
                backups,
            ],
        );
        let gw = start_gateway(&sim, "").await;
        let start = Instant::now();
        let listed = gw
            .client
            .clone()
            .max_decoding_message_size(256 << 20)
            .list_targets(pb::ListTargetsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .targets
            .len();
        let list_targets = start.elapsed().as_secs_f64();
        assert_eq!(listed, sim.targets.len());
        let (n, secs) = stream_counted(gw.channel.clone(), pb::ListBackupsRequest::default()).await;
        rows.push(Row {
            name: format!("{name}: ListTargets"),
            value: format!("{list_targets:.2} s"),
            target: "< 1 s".into(),
        });
        rows.push(Row {
            name: format!(
                "  the whole inventory ({} k backups): time, peak RSS",
                n / 1000
            ),
            value: format!("{secs:.1} s, {:.0} MiB", peak_rss_mib(gw.proc.pid())),
            target: goal.into(),
        });
        drop(gw.client);
    }
    rows
}
