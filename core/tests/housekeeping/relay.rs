//! The job outbox relay: rows are taken `FOR UPDATE SKIP LOCKED` and held while they are
//! published, so relays racing on one outbox publish every job exactly once.

use crate::seed;
use crate::support::TestDb;
use bulkhead_core::queue::{self, BrokerAddress, Topology};
use bulkhead_core::store::outbox;
use lapin::options::{BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

fn broker() -> BrokerAddress {
    BrokerAddress {
        url: std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
        ca_file: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_racing_on_one_outbox_publish_each_job_once() {
    let db = TestDb::migrated();
    let mut conn = db.connect();
    let jobs = seed::queued_jobs(&mut conn, 600);
    let pool = db.pool(8);
    let topology = Topology::with_prefix(&format!("relay-race-{}", uuid::Uuid::now_v7().simple()));
    let connection = queue::connect(&broker()).await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    queue::declare(&channel, &topology).await.expect("topology");

    let (stop, shutdown) = watch::channel(false);
    let relays: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(queue::run_relay(
                pool.clone(),
                broker(),
                topology.clone(),
                Arc::new(Notify::new()),
                Duration::from_millis(10),
                shutdown.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    while seed::count(
        &mut conn,
        "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL",
    ) > 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the relays did not publish the outbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    for relay in relays {
        relay.await.expect("relay task");
    }

    let mut published: BTreeMap<uuid::Uuid, usize> = BTreeMap::new();
    while let Some(message) = channel
        .basic_get(topology.queue.as_str().into(), BasicGetOptions::default())
        .await
        .expect("basic.get")
    {
        let body: queue::JobMessage =
            serde_json::from_slice(&message.delivery.data).expect("a job message");
        *published.entry(body.job_id).or_default() += 1;
        message
            .delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
    }
    let twice: Vec<_> = published.iter().filter(|(_, n)| **n > 1).collect();
    for (queue_name, exchange) in [
        (&topology.queue, &topology.exchange),
        (&topology.dead_letter_queue, &topology.dead_letter_exchange),
    ] {
        let _ = channel
            .queue_delete(queue_name.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    assert!(
        twice.is_empty(),
        "{} of {} jobs published more than once, e.g. {:?}",
        twice.len(),
        jobs.len(),
        twice.first()
    );
    assert_eq!(published.len(), jobs.len(), "every job published");
}

/// A row a relay holds is not taken again until the hold ends or the publish fails.
#[test]
fn a_taken_row_waits_for_its_hold_to_end() {
    let db = TestDb::migrated();
    let mut conn = db.connect();
    let jobs = seed::queued_jobs(&mut conn, 3);
    let first = outbox::take_unsent(&mut conn, 2).expect("take");
    assert_eq!(first.len(), 2);
    assert!(first[0].id < first[1].id, "oldest first");
    let second = outbox::take_unsent(&mut conn, 10).expect("take again");
    assert_eq!(second.len(), 1, "only the row nobody holds");
    assert!(outbox::take_unsent(&mut conn, 10).expect("take").is_empty());

    // A failed publish lets go at once; a dead relay's hold runs out.
    outbox::record_failure(&mut conn, &[first[0].id], "broker gone").expect("failure");
    seed::exec(
        &mut conn,
        &format!(
            "UPDATE outbox SET claimed_until = now() - interval '1 second' WHERE id = {}",
            second[0].id
        ),
    );
    let again: Vec<i64> = outbox::take_unsent(&mut conn, 10)
        .expect("take")
        .iter()
        .map(|row| row.id)
        .collect();
    assert_eq!(again, [first[0].id, second[0].id]);
    outbox::mark_sent(&mut conn, &again).expect("sent");
    assert_eq!(
        seed::count(
            &mut conn,
            "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL"
        ),
        1
    );
    assert_eq!(jobs.len(), 3);
}
