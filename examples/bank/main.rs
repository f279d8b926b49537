//! The bank demo: accounts on the embedded SQLite store.
//!
//! ```sh
//! cargo run --example bank                 # uses ./bank.db, continuing earlier runs
//! cargo run --example bank -- --fresh      # deletes the file first
//! cargo run --example bank -- --db /tmp/x.db
//! ```
//!
//! Opens two accounts (once: later runs find them and go on), deposits, withdraws, refuses an
//! overdraft, transfers money, refuses a transfer to a closed account and refunds it, then prints
//! the balances and one account's history.

#![allow(clippy::print_stdout)] // a demo prints

mod domain;

use std::path::PathBuf;

use anyhow::Context as _;
use interlock::prelude::*;
use interlock::sqlite::SqliteEventStore;
use uuid::Uuid;

use domain::*;

const ADA: Uuid = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0ada);
const BOB: Uuid = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0b0b);
const EVE: Uuid = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0e0e);

struct Options {
    db: PathBuf,
    fresh: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        db: PathBuf::from("bank.db"),
        fresh: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fresh" => options.fresh = true,
            "--db" => options.db = args.next().context("--db needs a path")?.into(),
            "-h" | "--help" => {
                println!("usage: bank [--fresh] [--db PATH]");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(options)
}

async fn open_once(app: &Application, id: Uuid, owner: &str) -> anyhow::Result<()> {
    match app
        .dispatch(OpenAccount {
            aggregate_id: id,
            owner: owner.into(),
        })
        .await
    {
        Ok(()) => println!("opened the account of {owner}"),
        Err(Error::Domain(e)) if e.code() == Some("already_open") => {
            println!("the account of {owner} is already open (an earlier run)");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    if options.fresh {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = options.db.clone().into_os_string();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context("removing the old database"),
            }
        }
    }
    let store = SqliteEventStore::open(&options.db)
        .with_context(|| format!("opening {}", options.db.display()))?;
    println!("event store: {}", store.path().display());
    let app = bank(Application::builder().with_event_store(store)).build()?;
    app.start().await?;

    open_once(&app, ADA, "Ada").await?;
    open_once(&app, BOB, "Bob").await?;
    open_once(&app, EVE, "Eve").await?;

    let balance = app
        .dispatch(DepositMoney {
            aggregate_id: ADA,
            amount: 100,
        })
        .await?;
    println!("Ada deposits 100 -> balance {balance}");
    let balance = app
        .dispatch(WithdrawMoney {
            aggregate_id: ADA,
            amount: 30,
        })
        .await?;
    println!("Ada withdraws 30 -> balance {balance}");

    let before = app.load::<BankAccount>(BOB).await?.balance;
    match app
        .dispatch(WithdrawMoney {
            aggregate_id: BOB,
            amount: before + 50,
        })
        .await
    {
        Err(Error::Domain(e)) => println!("Bob withdraws {} -> refused: {e}", before + 50),
        other => anyhow::bail!("the overdraft should have been refused, got {other:?}"),
    }
    let after = app.load::<BankAccount>(BOB).await?.balance;
    anyhow::ensure!(before == after, "a refused command must change nothing");

    let done = transfer(&app, ADA, BOB, 25).await?;
    println!(
        "Ada transfers 25 to Bob -> {}",
        done.outcome.as_deref().unwrap_or("pending")
    );

    // A retried deposit with the same idempotency key is answered, not applied again.
    let key = format!("salary-{}", uuid::Uuid::now_v7());
    for attempt in 1..=2 {
        let balance = app
            .dispatch_with(
                DepositMoney {
                    aggregate_id: BOB,
                    amount: 10,
                },
                DispatchOptions::new().idempotency_key(key.clone()),
            )
            .await?
            .output;
        println!("Bob's salary (attempt {attempt}, same key) -> balance {balance}");
    }

    if !app.load::<BankAccount>(EVE).await?.closed {
        app.dispatch(CloseAccount { aggregate_id: EVE }).await?;
        println!("Eve closes her account");
    }
    let refused = transfer(&app, ADA, EVE, 10).await?;
    println!(
        "Ada transfers 10 to Eve -> {}",
        refused.outcome.as_deref().unwrap_or("pending")
    );
    anyhow::ensure!(
        refused
            .outcome
            .as_deref()
            .is_some_and(|o| o.starts_with("refunded")),
        "a transfer to a closed account must be refunded"
    );

    println!();
    println!("balances (from the projection, checked against the aggregates):");
    let head = app.event_store().head_position().await?;
    app.wait_for(head).await?;
    let projected = app.query(AllBalances).await?;
    for id in [ADA, BOB, EVE] {
        let account = app.load::<BankAccount>(id).await?;
        let state = if account.closed { " (closed)" } else { "" };
        println!("  {:<4} {:>6}{state}", account.owner, account.balance);
        anyhow::ensure!(
            projected.contains(&(account.owner.clone(), i128::from(account.balance))),
            "the projection disagrees with the aggregate of {}",
            account.owner
        );
    }

    println!();
    println!("history of Ada's account:");
    for event in app.events_of::<BankAccount>(ADA).await? {
        println!(
            "  v{:<3} {:<17} {}",
            event.stream_version,
            event.event_type,
            String::from_utf8_lossy(&event.payload)
        );
    }
    app.shutdown().await?;
    Ok(())
}
