//! The benchmark's records (`scripts/bench.sh`), written in Rust so that the
//! benchmark needs nothing beyond what building kafka2mysql needs.
//!
//! ```text
//! bench_records data N KV_FILE TSV_FILE
//! bench_records debezium N KV_FILE
//! bench_records paced RATE SECONDS FIRST_ID
//! ```
//!
//! `data` writes the fixed data set: N orders with ids 1..=N, the same on
//! every machine (a fixed-seed generator), as `id<TAB>JSON` lines for
//! `kcat -K '\t'` (key = id) and as tab-separated rows of the same values for
//! `LOAD DATA`. A JSON value is about 200 bytes.
//!
//! `debezium` writes the same N orders as Debezium change events (`op`
//! `c`, the row in `after`, a MySQL connector's `source`), without schemas
//! (the JSON converter's `schemas.enable=false`), as `{"id":N}<TAB>event`
//! lines: Debezium's key is the row's key as a JSON object.
//!
//! `paced` writes `id<TAB>JSON` lines to stdout at a steady RATE per second
//! for SECONDS, ids from FIRST_ID, each record carrying in `produced_ms` the
//! wall-clock time (ms since the epoch) at which it was handed on; the
//! latency measurement subtracts it from the row's insert time.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const REGIONS: [&str; 5] = [
    "eu-west-1",
    "eu-central-1",
    "us-east-1",
    "us-west-2",
    "ap-south-1",
];
const STATUSES: [&str; 6] = ["new", "paid", "packed", "shipped", "delivered", "returned"];
const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "CHF"];

/// One order; `values` gives the columns in the table's order.
struct Order {
    id: u64,
    customer: String,
    region: &'static str,
    status: &'static str,
    amount: String,
    currency: &'static str,
    items: u64,
    produced_ms: u64,
    note: String,
}

impl Order {
    /// Order `id` of the data set: its fields come from the id through a
    /// fixed 64-bit generator, so the data set never changes.
    fn generated(id: u64, state: &mut u64) -> Order {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = *state >> 33;
        let customer = format!("customer-{:07}", r % 1_000_000);
        let status = STATUSES[((r >> 4) % 6) as usize];
        let mut note = format!("order {id} of {customer}, {status}");
        note.truncate(44);
        while note.len() < 44 {
            note.push(' ');
        }
        Order {
            id,
            customer,
            region: REGIONS[(r % 5) as usize],
            status,
            amount: format!("{}.{:02}", (r >> 8) % 100_000, (r >> 3) % 100),
            currency: CURRENCIES[((r >> 12) % 4) as usize],
            items: 1 + (r >> 16) % 20,
            produced_ms: 0,
            note,
        }
    }

    /// A latency probe.
    fn probe(id: u64, produced_ms: u64) -> Order {
        Order {
            id,
            customer: "customer-latency".into(),
            region: "eu-west-1",
            status: "new",
            amount: "1.00".into(),
            currency: "EUR",
            items: 1,
            produced_ms,
            note: "latency probe".into(),
        }
    }

    /// The row as a JSON object; no field needs JSON escaping.
    fn json(&self) -> String {
        format!(
            "{{\"id\":{},\"customer\":\"{}\",\"region\":\"{}\",\"status\":\"{}\",\"amount\":\"{}\",\"currency\":\"{}\",\"items\":{},\"produced_ms\":{},\"note\":\"{}\"}}",
            self.id, self.customer, self.region, self.status, self.amount, self.currency, self.items, self.produced_ms, self.note
        )
    }

    /// `id<TAB>{json}`.
    fn kv_line(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "{}\t{}", self.id, self.json())
    }

    /// `{"id":N}<TAB>{change event}`: a create event of a MySQL source as
    /// Debezium 2.x writes it without schemas (the amount as text:
    /// `decimal.handling.mode=string`).
    fn debezium_line(&self, out: &mut impl Write) -> std::io::Result<()> {
        let ts_ms = 1_735_725_600_000 + self.id;
        writeln!(
            out,
            "{{\"id\":{}}}\t{{\"before\":null,\"after\":{},\"source\":{{\"version\":\"2.7.3.Final\",\"connector\":\"mysql\",\"name\":\"shop\",\"ts_ms\":{ts_ms},\"snapshot\":\"false\",\"db\":\"shop\",\"sequence\":null,\"table\":\"orders\",\"server_id\":223344,\"gtid\":null,\"file\":\"mysql-bin.000003\",\"pos\":{},\"row\":0,\"thread\":7,\"query\":null}},\"op\":\"c\",\"ts_ms\":{},\"transaction\":null}}",
            self.id,
            self.json(),
            154 + self.id * 420,
            ts_ms + 3
        )
    }

    /// The columns id, customer, region, status, amount, currency, items,
    /// produced_ms, note; no field holds a tab, newline or backslash.
    fn tsv_line(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.id,
            self.customer,
            self.region,
            self.status,
            self.amount,
            self.currency,
            self.items,
            self.produced_ms,
            self.note
        )
    }
}

fn data(n: u64, kv_path: &str, tsv_path: &str) -> std::io::Result<()> {
    let mut kv = BufWriter::with_capacity(1 << 20, File::create(kv_path)?);
    let mut tsv = BufWriter::with_capacity(1 << 20, File::create(tsv_path)?);
    let mut state = 12345;
    for id in 1..=n {
        let order = Order::generated(id, &mut state);
        order.kv_line(&mut kv)?;
        order.tsv_line(&mut tsv)?;
    }
    kv.flush()?;
    tsv.flush()
}

fn debezium(n: u64, kv_path: &str) -> std::io::Result<()> {
    let mut kv = BufWriter::with_capacity(1 << 20, File::create(kv_path)?);
    let mut state = 12345;
    for id in 1..=n {
        Order::generated(id, &mut state).debezium_line(&mut kv)?;
    }
    kv.flush()
}

fn paced(rate: u64, seconds: u64, first_id: u64) -> std::io::Result<()> {
    let total = rate * seconds;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        // Everything due by now, then a short sleep: at 1,000/s that is a
        // record or two per turn, each stamped as it is handed to kcat.
        let due = (((start.elapsed().as_secs_f64() * rate as f64) as u64) + 1).min(total);
        if due > sent {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_millis() as u64;
            for id in first_id + sent..first_id + due {
                Order::probe(id, now_ms).kv_line(&mut out)?;
            }
            out.flush()?;
            sent = due;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(())
}

fn number(text: &str, what: &str) -> Result<u64, String> {
    text.parse().map_err(|e| format!("{what} {text:?}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["data", n, kv, tsv] => {
            number(n, "N").and_then(|n| data(n, kv, tsv).map_err(|e| e.to_string()))
        }
        ["debezium", n, kv] => {
            number(n, "N").and_then(|n| debezium(n, kv).map_err(|e| e.to_string()))
        }
        ["paced", rate, seconds, first] => (|| {
            let (rate, seconds, first) = (
                number(rate, "RATE")?,
                number(seconds, "SECONDS")?,
                number(first, "FIRST_ID")?,
            );
            paced(rate, seconds, first).map_err(|e| e.to_string())
        })(),
        _ => {
            Err("usage: bench_records data N KV_FILE TSV_FILE | debezium N KV_FILE | paced RATE SECONDS FIRST_ID".into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_records: {e}");
            ExitCode::from(2)
        }
    }
}
