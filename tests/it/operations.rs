//! Operating the service (issue 5): `scripts/run.sh` under cron, `status`
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
    let status_json = || -> serde_json::Value {
        let out = run_binary(
            &["status", "--config", s.config_arg(), "--json"],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{out:?}");
        serde_json::from_str(&out.stdout).expect("status --json prints JSON")
    };
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
    let stopped = status_json();
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
