//! Operating the service: `scripts/run.sh` under cron, `status`
//! against Kafka's own tools, `reset-offsets`, and the password kept out of
//! command lines and logs.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::*;
use crate::setup::{orders, Setup, ORDERS};

const SECRET: &str = "k2m-test-password";

/// `scripts/run.sh ARGS --config CONFIG` with the test binary; the password
/// is in the environment only when `password_in_env`.
fn run_sh(args: &[&str], config: &Path, password_in_env: bool) -> Output {
    let mut command = Command::new(repo_root().join("scripts/run.sh"));
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env("KAFKA2MYSQL_BIN", env!("CARGO_BIN_EXE_kafka2mysql"))
        .env_remove("MYSQL_PASSWORD")
        .stdin(Stdio::null());
    if password_in_env {
        command.env("MYSQL_PASSWORD", SECRET);
    }
    command.output().expect("run.sh runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Pids of kafka2mysql processes running with this config file.
fn service_pids(config: &Path) -> Vec<u32> {
    let config = std::fs::canonicalize(config).unwrap();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_service = args.first().is_some_and(|a| a.ends_with("kafka2mysql"))
            && args.get(1).is_some_and(|a| a == "run")
            && args.iter().any(|a| Path::new(a) == config);
        if is_service {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn run_sh_starts_once_reports_status_and_stops_with_everything_committed() {
    let s = Setup::new(
        "ops_runsh",
        3,
        ORDERS,
        "[log]\nfile = \"../logs/service.log\"\nlevel = \"info\"",
    );
    s.produce_orders(0..3, 0, 300);
    let status = run_sh(&["status"], &s.config, true);
    assert_eq!(
        status.status.code(),
        Some(3),
        "not running yet: {}",
        text(&status)
    );

    // Three overlapping cron runs leave one process.
    let starts: Vec<std::thread::JoinHandle<Output>> = (0..3)
        .map(|_| {
            let config = s.config.clone();
            std::thread::spawn(move || run_sh(&["start"], &config, true))
        })
        .collect();
    for start in starts {
        let out = start.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let pids = service_pids(&s.config);
    assert_eq!(
        pids.len(),
        1,
        "three concurrent starts must leave one process, found {pids:?}"
    );
    let again = run_sh(&["start"], &s.config, true);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already running"),
        "{}",
        text(&again)
    );
    assert_eq!(service_pids(&s.config), pids);

    let status = run_sh(&["status"], &s.config, true);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        out.contains(&pids[0].to_string()),
        "status prints the pid: {out}"
    );

    s.wait_rows(900, Duration::from_secs(60));
    let stop = run_sh(&["stop"], &s.config, true);
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop));
    assert!(service_pids(&s.config).is_empty(), "stopped");
    let status = run_sh(&["status"], &s.config, true);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));
    s.assert_committed_at_log_end();
    let log =
        std::fs::read_to_string(s.dir.join("logs/service.log")).expect("the service's log file");
    assert!(log.contains("offsets committed"), "{log}");
}

#[test]
fn status_agrees_with_kafkas_tools_and_reset_offsets_refuses_while_running() {
    let s = Setup::new("ops_status", 3, ORDERS, "");
    for p in 0..3 {
        produce_json(&s.topic, p, &orders(p, 0, 100 + p as i64 * 50));
    }
    produce(&s.topic, 2, &[(None, Some(b"not json".to_vec()))]);
    let mut service = s.start();
    s.wait_rows(450, Duration::from_secs(60));
    let log_end = log_end_offsets(&s.topic);
    // Exit 0 running with every partition flowing, 3 not running.
    let status_json_exit = |code: i32| -> serde_json::Value {
        let out = run_binary(
            &["status", "--config", s.config_arg(), "--json"],
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(code), "{out:?}");
        serde_json::from_str(&out.stdout).expect("status --json prints JSON")
    };
    let status_json = || status_json_exit(0);
    let report = wait_until(
        "status to show lag 0 everywhere",
        Duration::from_secs(60),
        || {
            let r = status_json();
            let lags: Vec<i64> = r["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["lag"].as_i64().unwrap_or(-1))
                .collect();
            if lags.iter().all(|&l| l == 0) {
                Ok(r)
            } else {
                Err(format!("lags {lags:?}"))
            }
        },
    );
    assert_eq!(report["running"], true);
    assert_eq!(report["pid"], service.pid());
    let tool = group_offsets(&s.group, &s.topic);
    for p in report["partitions"].as_array().unwrap() {
        let id = p["partition"].as_i64().unwrap() as i32;
        assert_eq!(
            p["committed"].as_i64(),
            tool[&id],
            "committed of partition {id} vs Kafka's consumer-groups tool"
        );
        assert_eq!(
            p["latest"].as_i64(),
            Some(log_end[&id]),
            "latest of partition {id} vs GetOffsetShell"
        );
        assert_eq!(p["earliest"], 0);
        assert_eq!(p["state"], "flowing");
    }
    assert_eq!(report["dead_letters"], 1);
    assert_eq!(report["partitions"][2]["dead_letters"], 1);

    let table = run_binary(
        &["status", "--config", s.config_arg()],
        Duration::from_secs(60),
    );
    assert!(table.status.success());
    assert!(
        table.stdout.contains("running (pid") && table.stdout.contains("flowing"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("dead letters: 1"), "{}", table.stdout);

    let refused = run_binary(
        &[
            "reset-offsets",
            "--config",
            s.config_arg(),
            "--to",
            "earliest",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(refused.stderr.contains("running"), "{refused:?}");

    assert!(service.sigterm_and_wait(Duration::from_secs(30)).success());
    let stopped = status_json_exit(3);
    assert_eq!(stopped["running"], false);
    assert_eq!(stopped["partitions"][0]["state"], "stopped");

    let reset = run_binary(
        &[
            "reset-offsets",
            "--config",
            s.config_arg(),
            "--to",
            "earliest",
            "--partition",
            "1",
        ],
        Duration::from_secs(60),
    );
    assert!(reset.status.success(), "{reset:?}");
    assert!(
        reset.stdout.contains("150") && reset.stdout.contains(" 0"),
        "old and new offsets: {}",
        reset.stdout
    );
    assert_eq!(
        group_offsets(&s.group, &s.topic)[&1],
        Some(0),
        "Kafka's tool sees the reset"
    );
}

#[test]
fn the_password_is_in_no_command_line_and_no_log_line() {
    let s = Setup::new(
        "ops_secret",
        2,
        ORDERS,
        "[log]\nfile = \"../logs/service.log\"\nlevel = \"debug\"",
    );
    // Cron passes no environment: the password comes from the env file.
    let env_file = s.dir.join("conf/kafka2mysql.env");
    std::fs::write(
        &env_file,
        format!("# for run.sh\nMYSQL_PASSWORD={SECRET}\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = run_sh(&["start"], &s.config, false);
    assert_ne!(
        refused.status.code(),
        Some(0),
        "a readable env file is refused: {}",
        text(&refused)
    );
    assert!(!text(&refused).contains(SECRET));
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    s.produce_orders(0..2, 0, 100);
    let start = run_sh(&["start"], &s.config, false);
    assert_eq!(start.status.code(), Some(0), "{}", text(&start));
    s.wait_rows(200, Duration::from_secs(60));
    let pids = service_pids(&s.config);
    assert_eq!(pids.len(), 1);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(SECRET),
        "password in /proc/PID/cmdline"
    );
    let stop = run_sh(&["stop"], &s.config, false);
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop));
    for output in [&refused, &start, &stop] {
        assert!(
            !text(output).contains(SECRET),
            "run.sh printed the password"
        );
    }

    let mut checked = 0;
    for entry in std::fs::read_dir(s.dir.join("logs")).unwrap().flatten() {
        let content = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !content.contains(SECRET),
            "password in {}",
            entry.path().display()
        );
        checked += content.lines().count();
    }
    assert!(checked > 10, "the logs were written ({checked} lines)");
}

#[test]
fn sighup_reopens_the_log_file_for_logrotate() {
    let s = Setup::new(
        "ops_sighup",
        1,
        ORDERS,
        "[log]\nfile = \"../logs/service.log\"\nlevel = \"info\"\nstats_interval_ms = 200",
    );
    let log = s.dir.join("logs/service.log");
    let rotated = s.dir.join("logs/service.log.1");
    let mut service = s.start();
    wait_until("the log file", Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                if t.contains("running: topic") {
                    Ok(())
                } else {
                    Err(t)
                }
            })
    });
    std::fs::rename(&log, &rotated).unwrap();
    service.signal(libc::SIGHUP);
    wait_until(
        "a new log file after SIGHUP",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    if t.contains("log file reopened") && t.contains("stats:") {
                        Ok(())
                    } else {
                        Err(t)
                    }
                })
        },
    );
    assert!(service.is_running(), "SIGHUP must not stop the service");
    assert!(service.sigterm_and_wait(Duration::from_secs(30)).success());
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("log file reopened"));
}

/// The run files: a second `run` and `reset-offsets` are refused while the
/// pid lock is held, and leave the running instance's files alone; `status`
/// never takes the lock, so that calling it during a start cannot make the
/// start fail; the pid file is never removed; the status file is private.
#[test]
fn run_files_hold_one_instance_without_races() {
    let s = Setup::new(
        "ops_runfiles",
        1,
        ORDERS,
        "[log]\nfile = \"../logs/service.log\"\nlevel = \"info\"",
    );
    s.produce_orders(0..1, 0, 50);
    let pid_file = s.dir.join("run/kafka2mysql.pid");
    let log_file = s.dir.join("logs/service.log");

    // Status calls all through the start: each one sees "starting",
    // "running" or "not running", and the start succeeds.
    let stop_polling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let config = s.config_arg().to_string();
        let stop = std::sync::Arc::clone(&stop_polling);
        std::thread::spawn(move || {
            let mut calls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = run_binary(
                    &["status", "--local", "--config", &config],
                    Duration::from_secs(10),
                );
                assert!(
                    matches!(out.status.code(), Some(0 | 1 | 3)),
                    "status --local: {out:?}"
                );
                calls += 1;
            }
            calls
        })
    };
    let mut service = s.start();
    s.wait_rows(50, Duration::from_secs(60));
    stop_polling.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(poller.join().unwrap() > 0);
    assert!(service.is_running(), "{}", service.log_text());

    let log_before = std::fs::read(&log_file).expect("the service's log file");
    let second = run_binary(
        &["run", "--config", s.config_arg()],
        Duration::from_secs(30),
    );
    assert_eq!(second.status.code(), Some(3), "{second:?}");
    assert!(
        second
            .stderr
            .contains(&format!("already running (pid {},", service.pid())),
        "{second:?}"
    );
    let reset = run_binary(
        &[
            "reset-offsets",
            "--config",
            s.config_arg(),
            "--to",
            "earliest",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(reset.status.code(), Some(1), "{reset:?}");
    let log_after = std::fs::read(&log_file).expect("the service's log file");
    assert!(
        log_after.starts_with(&log_before)
            && !String::from_utf8_lossy(&log_after[log_before.len()..]).contains("starting with"),
        "the refused run wrote into the running instance's log"
    );

    use std::os::unix::fs::PermissionsExt;
    let status_mode = std::fs::metadata(s.status_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(status_mode & 0o077, 0, "status file mode {status_mode:o}");
    let local = run_binary(
        &["status", "--local", "--config", s.config_arg(), "--json"],
        Duration::from_secs(10),
    );
    assert_eq!(local.status.code(), Some(0), "{local:?}");
    assert!(
        local
            .stdout
            .contains(&format!("\"pid\": {}", service.pid())),
        "{local:?}"
    );

    let stop = run_binary(
        &["stop", "--config", s.config_arg()],
        Duration::from_secs(60),
    );
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    assert!(stop.stdout.contains("stopped"), "{stop:?}");
    assert!(service.wait_exit(Duration::from_secs(10)).success());
    assert!(pid_file.exists(), "the pid file stays, empty");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), "");
    let stopped = run_binary(
        &["status", "--local", "--config", s.config_arg()],
        Duration::from_secs(10),
    );
    assert_eq!(stopped.status.code(), Some(3), "{stopped:?}");
    let again = run_binary(
        &["stop", "--config", s.config_arg()],
        Duration::from_secs(10),
    );
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert!(again.stdout.contains("not running"), "{again:?}");

    // With the service stopped, reset-offsets takes the lock itself: a run
    // started meanwhile is refused. Its lock is held here, as it holds it.
    let held = kafka2mysql::run_files::PidLock::acquire(&pid_file).expect("the lock is free");
    let refused = run_binary(
        &["run", "--config", s.config_arg()],
        Duration::from_secs(30),
    );
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    drop(held);
    s.assert_committed_at_log_end();
}
