//! What the benchmark binaries share: removing the broker objects a run declared.

/// Deletes the queues and exchanges of topology `prefix` on the local broker (best effort: a
/// benchmark's cleanup must not hide its figures behind a broker error).
pub fn remove_broker_objects(prefix: &str) {
    let topology = bulkhead_core::queue::Topology::with_prefix(prefix);
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let connection = lapin::Connection::connect(
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                lapin::ConnectionProperties::default(),
            )
            .await?;
            let channel = connection.create_channel().await?;
            for queue in [&topology.queue, &topology.dead_letter_queue] {
                let _ = channel
                    .queue_delete(
                        queue.as_str().into(),
                        lapin::options::QueueDeleteOptions::default(),
                    )
                    .await;
            }
            for exchange in [&topology.exchange, &topology.dead_letter_exchange] {
                let _ = channel
                    .exchange_delete(
                        exchange.as_str().into(),
                        lapin::options::ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
            let _ = connection.close(200, "done".into()).await;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
    })
    .join();
}
