//! `meridian bench compare etcd`: `meridian bench bank`'s transfers against an etcd cluster.
//!
//! The accounts are the bank's keys (`bank/acct/NNNN`, decimal balances), loaded with one `Put`
//! each. A transfer mirrors Meridian's read-write transaction the way an etcd client does
//! optimistic concurrency (what clientv3's STM does): read both accounts with linearizable
//! `Range`s (etcd's default: a quorum-confirmed read index), then one `Txn` that writes both
//! new balances only if neither key's `mod_revision` has moved since it was read. A failed
//! compare means another transfer won; the transfer reads again and retries (counted under
//! aborts, as Meridian counts its wound-wait aborts). Clients are spread over the endpoints
//! round-robin; a follower forwards a `Txn` to the leader, whose Raft log entry is fsynced on a
//! quorum before it answers.
//!
//! ```text
//!   one transfer    Range a, Range b (each a read-index round on the leader), then
//!                   Txn: one Raft entry, fsync on leader and a follower (‖)
//!   contention      optimistic: a conflicting transfer loses its compare and re-runs
//! ```
//!
//! At the end the bank total must be what was loaded; the run fails otherwise.

use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

use super::compare::{Row, Series};
use super::{OP_TIMEOUT, WARM_OPS, drive};
use crate::workload::acct;

/// The slice of etcd's v3 KV API in `cli/proto/etcd/kv.proto`.
mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, compare, request_op};

/// Arguments of `meridian bench compare etcd`.
#[derive(clap::Args)]
pub struct EtcdArgs {
    /// Client URLs of the cluster's members (`http://127.0.0.1:2379,…`).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Accounts.
    #[arg(long, default_value_t = 64)]
    accounts: usize,
    /// Concurrent transfer clients, one step each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16,32")]
    concurrency: Vec<usize>,
    /// Seconds per step.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// How long connecting to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Most tries of one transfer (a failed compare starts the next) before it counts as failed.
const TRIES_MAX: u64 = 1_000;
/// Most concurrent clients of one step.
const CONCURRENCY_MAX: usize = 1_024;
/// Most accounts (the bank's key names have four digits).
const ACCOUNTS_MAX: usize = 10_000;

/// A balance as stored (decimal text) and the key's mod revision.
async fn get(kv: &mut KvClient<Channel>, key: &[u8]) -> anyhow::Result<(i64, i64)> {
    let r = kv.range(RangeRequest { key: key.to_vec(), ..Default::default() }).await?.into_inner();
    let kv = r.kvs.first().with_context(|| {
        format!(
            "account {} is missing: the bank was not loaded, or the keys were changed",
            String::from_utf8_lossy(key)
        )
    })?;
    let b = std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not a balance: {}", String::from_utf8_lossy(&kv.value)))?;
    Ok((b, kv.mod_revision))
}

fn put(key: &[u8], balance: i64) -> RequestOp {
    let put = PutRequest { key: key.to_vec(), value: balance.to_string().into_bytes() };
    RequestOp { request: Some(request_op::Request::RequestPut(put)) }
}

/// `mod_revision(key) == rev`.
fn unchanged(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(rev)),
    }
}

/// One transfer of one unit from account `from` to account `to`: how many tries lost their
/// compare, and the result.
async fn transfer(mut kv: KvClient<Channel>, from: usize, to: usize) -> (u64, anyhow::Result<()>) {
    let (a, b) = (acct(from), acct(to));
    for lost in 0..TRIES_MAX {
        let won = async {
            let (fa, ra) = get(&mut kv, &a).await?;
            let (fb, rb) = get(&mut kv, &b).await?;
            let txn = TxnRequest {
                compare: vec![unchanged(&a, ra), unchanged(&b, rb)],
                success: vec![put(&a, fa - 1), put(&b, fb + 1)],
                failure: vec![],
            };
            anyhow::Ok(kv.txn(txn).await?.into_inner().succeeded)
        }
        .await;
        match won {
            Ok(true) => return (lost, Ok(())),
            Ok(false) => {}
            Err(e) => return (lost, Err(e)),
        }
    }
    (TRIES_MAX, Err(anyhow::anyhow!("lost the compare {TRIES_MAX} times in a row")))
}

/// A client of every endpoint, failing with what to do when one cannot be reached.
async fn connect(endpoints: &[String]) -> anyhow::Result<Vec<KvClient<Channel>>> {
    let mut clients = Vec::with_capacity(endpoints.len());
    for ep in endpoints {
        let channel = Endpoint::from_shared(ep.clone())
            .with_context(|| format!("--endpoints: {ep:?} is not a URL (e.g. http://127.0.0.1:2379)"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(OP_TIMEOUT)
            .connect()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach etcd at {ep} ({e}): start a cluster there (bench/compare starts three \
                     members on loopback) or pass the right --endpoints"
                )
            })?;
        clients.push(KvClient::new(channel));
    }
    Ok(clients)
}

/// `meridian bench compare etcd`.
pub fn run(args: EtcdArgs) -> anyhow::Result<()> {
    anyhow::ensure!((2..=ACCOUNTS_MAX).contains(&args.accounts), "--accounts must be between 2 and {ACCOUNTS_MAX}");
    anyhow::ensure!(
        args.concurrency.iter().all(|c| (1..=CONCURRENCY_MAX).contains(c)),
        "--concurrency values must be between 1 and {CONCURRENCY_MAX}"
    );
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    let rt = super::runtime()?;
    let rows = rt.block_on(async {
        let clients = connect(&args.endpoints).await?;
        let mut kv = clients[0].clone();
        let opening = super::bank::BALANCE.to_string().into_bytes();
        for a in 0..args.accounts {
            kv.put(PutRequest { key: acct(a), value: opening.clone() }).await.context("opening the accounts")?;
        }
        eprintln!("{} accounts on etcd at {}", args.accounts, args.endpoints.join(","));
        let mut rows = Vec::new();
        for (step, &c) in args.concurrency.iter().enumerate() {
            let (clients, n) = (clients.clone(), args.accounts);
            let d = Duration::from_secs_f64(args.seconds);
            let s = drive(&format!("etcd, {c} clients"), c, d, WARM_OPS, OP_TIMEOUT, move |t, i| {
                let kv = clients[t % clients.len()].clone();
                let (from, to) = super::bank::pick(n, t, i);
                transfer(kv, from, to)
            })
            .await?;
            eprintln!("  [{}/{}] {c:>4} clients: {}", step + 1, args.concurrency.len(), s.summary("transfers"));
            rows.push(Row::of(c, &s));
        }
        let mut total = 0i64;
        for a in 0..args.accounts {
            total += get(&mut kv, &acct(a)).await.context("reading the balances back")?.0;
        }
        let want = super::bank::BALANCE * args.accounts as i64;
        anyhow::ensure!(total == want, "the bank total changed: {total}, want {want}");
        eprintln!("bank total unchanged: {total}");
        anyhow::Ok(rows)
    })?;
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "| {} | {:.0} | {:.2} | {:.2} | {} | {} |",
                r.concurrency,
                r.ops_per_sec,
                r.latency.p50_us / 1e3,
                r.latency.p99_us / 1e3,
                r.aborts,
                r.failed
            )
        })
        .collect();
    super::print_table(
        "| clients | transfers/s | p50 ms | p99 ms | lost compares | failed |\n|---:|---:|---:|---:|---:|---:|",
        &lines,
    );
    if let Some(p) = &args.json {
        super::write_json(p, &Series { rows })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_transfer_txn_encodes_with_etcds_field_numbers() {
        let txn = TxnRequest { compare: vec![unchanged(b"k", 7)], success: vec![put(b"k", 5)], failure: vec![] };
        let bytes = txn.encode_to_vec();
        // compare (field 1, message): result EQUAL and target MOD = 2 (field 2), key (field 3),
        // mod_revision 7 (field 6); success (field 2): request_put (field 2) key, value "5".
        let compare = [0x0a, 7, 0x10, 2, 0x1a, 1, b'k', 0x30, 7];
        let success = [0x12, 8, 0x12, 6, 0x0a, 1, b'k', 0x12, 1, b'5'];
        assert_eq!(bytes, [&compare[..], &success[..]].concat());
    }
}
