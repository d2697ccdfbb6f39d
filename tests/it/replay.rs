//! `kafka2mysql replay-dead-letters`: dead letters of a too-narrow column
//! land once the column is widened; what still fails stays with one attempt
//! more; `--partition`, `--since` and `--dry-run`; refused while the service
//! runs; the group's offsets are never moved.

use std::time::Duration;

use crate::common::*;
use crate::setup::Setup;

/// (partition, offset, attempts, error text) of every dead letter.
fn dead_letters(s: &Setup) -> Vec<(i32, i64, u32, String)> {
    query_rows(&format!(
        "SELECT `partition`, `offset`, attempts, error_text FROM `{}` ORDER BY `partition`, `offset`",
        s.dead_letters
    ))
    .into_iter()
    .map(|row| {
        let cell = |i: usize| row[i].clone().unwrap_or_default();
        (
            cell(0).parse().unwrap(),
            cell(1).parse().unwrap(),
            cell(2).parse().unwrap(),
            cell(3),
        )
    })
    .collect()
}

fn ids(s: &Setup) -> Vec<String> {
    query_rows(&format!("SELECT id FROM `{}` ORDER BY id", s.table))
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect()
}

fn replay(s: &Setup, extra: &[&str]) -> CommandOutput {
    let mut args = vec!["replay-dead-letters", "--config", s.config_arg()];
    args.extend_from_slice(extra);
    run_binary(&args, Duration::from_secs(60))
}

#[test]
fn dead_letters_land_after_the_column_is_widened_and_bad_ones_stay() {
    let s = Setup::new(
        "replay",
        2,
        "id BIGINT PRIMARY KEY, name VARCHAR(4)",
        // Every bad record here fails alike (1406 on one column): dead-letter
        // them rather than block the partition as a fault of the table.
        "[retry]\nschema_fault_records = 0",
    );
    let names = |records: &[(i64, &str)]| -> Vec<serde_json::Value> {
        records
            .iter()
            .map(|(id, name)| serde_json::json!({"id": id, "name": name}))
            .collect()
    };
    produce_json(
        &s.topic,
        0,
        &names(&[
            (1, "ok"),
            (2, "toolong"),
            (3, "abc"),
            (4, "much too long still"),
            (5, "toolong2"),
        ]),
    );
    produce_json(&s.topic, 1, &names(&[(11, "toolong1"), (12, "fine")]));
    let mut service = s.start();
    s.wait_committed_at_log_end(Duration::from_secs(60));
    let before = dead_letters(&s);
    let at = |i: usize| (before[i].0, before[i].1);
    assert_eq!(
        (0..before.len()).map(at).collect::<Vec<_>>(),
        vec![(0, 1), (0, 3), (0, 4), (1, 0)],
        "{before:?}"
    );
    assert!(
        before[0].3.contains("Data too long for column 'name'"),
        "{before:?}"
    );
    let attempts = before[0].2;
    assert!(before.iter().all(|d| d.2 == attempts), "{before:?}");

    // While the service runs: refused, nothing touched.
    let out = replay(&s, &[]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stderr.contains("stop it first"), "{out:?}");
    assert_eq!(dead_letters(&s), before);
    crate::setup::sigterm_clean(&mut service);
    let committed = group_offsets(&s.group, &s.topic);

    // A bad --since is a usage error.
    let out = replay(&s, &["--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // A dry run maps each (they all do: the table is what refuses them) and
    // writes nothing.
    let out = replay(&s, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("partition 0 offset 1: would replay (write of id, name)"),
        "{out:?}"
    );
    assert!(out.stdout.contains("would replay 4 "), "{out:?}");
    assert_eq!(dead_letters(&s), before);
    assert_eq!(ids(&s), ["1", "3", "12"]);

    mysql_exec(&format!(
        "ALTER TABLE `{}` MODIFY name VARCHAR(10)",
        s.table
    ));

    // One partition only.
    let out = replay(&s, &["--partition", "1"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains("partition 1 offset 0: replayed"),
        "{out:?}"
    );
    assert_eq!(ids(&s), ["1", "3", "11", "12"]);
    assert_eq!(dead_letters(&s), before[..3].to_vec());

    // Only what was dead-lettered since a time: offset 4 is older.
    mysql_exec(&format!(
        "UPDATE `{}` SET created_at = '2020-01-01 00:00:00' WHERE `partition` = 0 AND `offset` = 4",
        s.dead_letters
    ));
    let out = replay(&s, &["--since", "2021-01-01T02:00:00+02:00"]);
    assert_eq!(out.status.code(), Some(1), "one still fails: {out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("partition 0 offset 1: replayed"),
        "{out:?}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "partition 0 offset 3: still failing (attempts {})",
            attempts + 1
        )),
        "{out:?}"
    );
    assert_eq!(lines.len(), 3, "{out:?}");
    assert_eq!(ids(&s), ["1", "2", "3", "11", "12"]);
    let now = dead_letters(&s);
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!((now[0].1, now[0].2), (3, attempts + 1), "{now:?}");
    assert!(
        now[0].3.contains("Data too long for column 'name'"),
        "{now:?}"
    );
    assert_eq!((now[1].1, now[1].2), (4, attempts), "not selected: {now:?}");

    // Everything: offset 4 lands, offset 3 fails once more.
    let out = replay(&s, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stdout
            .contains("replayed 1 (stale, the row holds a newer version: 0), still failing 1"),
        "{out:?}"
    );
    assert_eq!(ids(&s), ["1", "2", "3", "5", "11", "12"]);
    let now = dead_letters(&s);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(
        (now[0].0, now[0].1, now[0].2),
        (0, 3, attempts + 2),
        "{now:?}"
    );

    // A replay writes rows behind the service's position: the group's
    // offsets stay where the service committed them.
    assert_eq!(group_offsets(&s.group, &s.topic), committed);
}

#[test]
fn a_replayed_record_older_than_its_row_is_left_alone_with_a_version_column() {
    let s = Setup::new(
        "replay_versions",
        1,
        "id BIGINT PRIMARY KEY, name VARCHAR(4), v BIGINT",
        "[mysql]\nversion_column = \"v\"\n[retry]\nschema_fault_records = 0",
    );
    produce_json(
        &s.topic,
        0,
        &[
            serde_json::json!({"id": 1, "name": "too long", "v": 1}),
            serde_json::json!({"id": 1, "name": "new", "v": 2}),
            serde_json::json!({"id": 2, "name": "too long", "v": 1}),
        ],
    );
    crate::values::run_to_the_end(&s);
    assert_eq!(dead_letters(&s).len(), 2);
    mysql_exec(&format!(
        "ALTER TABLE `{}` MODIFY name VARCHAR(10)",
        s.table
    ));
    let out = replay(&s, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("partition 0 offset 0: replayed; the row holds a newer version"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("replayed 2 (stale, the row holds a newer version: 1), still failing 0"),
        "{out:?}"
    );
    assert_eq!(
        query_rows(&format!(
            "SELECT id, name, v FROM `{}` ORDER BY id",
            s.table
        )),
        vec![
            vec![Some("1".into()), Some("new".into()), Some("2".into())],
            vec![Some("2".into()), Some("too long".into()), Some("1".into())],
        ]
    );
    assert!(dead_letters(&s).is_empty());
}
