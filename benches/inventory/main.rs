//! `cargo bench --bench inventory`: the release binary's simulator and gateway as separate
//! processes on loopback, a client here, several repetitions, medians, one table.
//!
//! Set BACKUPGW_BENCH_QUICK=1 for a smaller, faster run (fewer repetitions, no sequential
//! baseline over the whole inventory), and BACKUPGW_BENCH_PROFILE=1 to only stream warm
//! inventories for 30 s (to profile the gateway with `perf record -p PID`; `=cold` to read every
//! page from the simulator each time).

mod clients;
mod harness;
mod inventory;
mod memory;
mod replicas;
mod scale;

use harness::scratch;

#[tokio::main]
async fn main() {
    backupgw::ddm::client::install_crypto_provider();
    let quick = std::env::var_os("BACKUPGW_BENCH_QUICK").is_some();
    let reps = if quick { 3 } else { 5 };
    let dir = scratch();
    let mut rows = Vec::new();

    let only = std::env::var("BACKUPGW_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "inventory" {
        rows.extend(inventory::inventory(quick, reps, &dir).await);
    }
    if only.is_empty() || only == "memory" {
        rows.extend(memory::memory(quick, &dir).await);
    }
    if only.is_empty() || only == "replicas" {
        rows.extend(replicas::replicas(reps, &dir).await);
    }
    if only.is_empty() || only == "scale" {
        rows.extend(scale::scale(&dir).await);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let width = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0);
    let vwidth = rows
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "\n{:<width$}  {:<vwidth$}  target",
        "benchmark (medians)", "result"
    );
    for r in rows {
        println!("{:<width$}  {:<vwidth$}  {}", r.name, r.value, r.target);
    }
}
