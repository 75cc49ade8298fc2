//! Moves money between two accounts in a read-write transaction.
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
    Ok(())
}
