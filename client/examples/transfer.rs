//! Moves money between two accounts on different ranges in a read-write transaction (two-phase
//! commit), then reads both in a lock-free read-only transaction.
//!
//! ```sh
//! meridian start --data-dir /tmp/m1 --listen 127.0.0.1:7001 &
//! cargo run -p meridian-client --example transfer -- 127.0.0.1:7001
//! ```

use meridian_client::{Client, ClientError};

fn balance(v: Option<Vec<u8>>) -> Result<i64, ClientError> {
    let Some(v) = v else { return Ok(0) };
    String::from_utf8_lossy(&v).parse().map_err(|e| ClientError::Invalid(format!("not a balance: {e}")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7001".into());
    let client = Client::connect([addr]).await?;
    client.put(b"acct/alice", b"100").await?;
    client.put(b"acct/bob", b"100").await?;
    // Put bob on a range of his own, so the transfer spans two ranges.
    if client.range_of(b"acct/bob").await?.start != b"acct/bob" {
        client.split(b"acct/bob").await?;
    }
    // The closure may run several times (after a wound or a leader change); each run starts
    // from scratch, and only the run that commits counts.
    let ((), ts) = client
        .read_write(|txn| {
            Box::pin(async move {
                let alice = balance(txn.get(b"acct/alice").await?)?;
                let bob = balance(txn.get(b"acct/bob").await?)?;
                if alice < 30 {
                    return Err(ClientError::Invalid("insufficient funds".into()));
                }
                txn.put(b"acct/alice", (alice - 30).to_string().as_bytes());
                txn.put(b"acct/bob", (bob + 30).to_string().as_bytes());
                Ok(())
            })
        })
        .await?;
    println!("transferred 30 from alice to bob, committed at {ts}");
    // Both balances in one consistent snapshot, without locks; it includes the transfer.
    let ((alice, bob), read_ts) = client
        .read_only(|ro| {
            Box::pin(async move { Ok((balance(ro.get(b"acct/alice").await?)?, balance(ro.get(b"acct/bob").await?)?)) })
        })
        .await?;
    println!("read at {read_ts}: alice {alice}, bob {bob}, total {}", alice + bob);
    Ok(())
}
