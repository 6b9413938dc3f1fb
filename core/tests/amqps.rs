//! `amqps://` through rustls against the real broker: a TLS endpoint (rustls, a certificate
//! from a private CA made here) in front of the local RabbitMQ; Bulkhead connects with
//! `BULKHEAD_AMQP_CA_FILE`, declares its topology, publishes with confirms, and the message
//! arrives in the quorum queue. A connection that does not trust the CA is refused.

use bulkhead_core::queue::{self, BrokerAddress, JobMessage, MESSAGE_VERSION, Publisher, Topology};
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Serves TLS on an ephemeral port and forwards the plaintext to RabbitMQ; returns the port.
async fn tls_front(cert_pem: &str, key_pem: &str) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut broker) = TcpStream::connect("127.0.0.1:5672").await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn publishes_over_amqps_with_a_private_ca() {
    let key = rcgen::KeyPair::generate().expect("key pair");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    let port = tls_front(&cert.pem(), &key.serialize_pem()).await;
    let ca_file =
        std::env::temp_dir().join(format!("bulkhead-amqps-ca-{}.pem", uuid::Uuid::now_v7()));
    std::fs::write(&ca_file, cert.pem()).expect("write CA");
    let address = BrokerAddress {
        url: format!("amqps://guest:guest@localhost:{port}/%2f"),
        ca_file: Some(ca_file.clone()),
    };

    let prefix = format!("amqps-test-{}", uuid::Uuid::now_v7().simple());
    let topology = Topology::with_prefix(&prefix);
    let connection = queue::connect(&address).await.expect("amqps connection");
    let publisher = Publisher::open(&connection, topology.clone())
        .await
        .expect("publisher");
    let message = JobMessage {
        v: MESSAGE_VERSION,
        job_id: uuid::Uuid::now_v7(),
        operation: "apply".into(),
    };
    publisher
        .publish_all(std::slice::from_ref(&message))
        .await
        .expect("confirmed publish");

    let channel = connection.create_channel().await.expect("channel");
    let mut received = None;
    for _ in 0..50 {
        if let Some(delivery) = channel
            .basic_get(
                topology.queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic_get")
        {
            received = Some(delivery);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let delivery = received.expect("the message reached the quorum queue");
    let got: JobMessage = serde_json::from_slice(&delivery.delivery.data).expect("message json");
    assert_eq!(got, message);

    for queue_name in [&topology.queue, &topology.dead_letter_queue] {
        channel
            .queue_delete(queue_name.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete queue");
    }
    for exchange in [&topology.exchange, &topology.dead_letter_exchange] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .expect("delete exchange");
    }

    // Without the CA, the same endpoint is refused: the certificate is really checked.
    let untrusted = BrokerAddress {
        ca_file: None,
        ..address
    };
    assert!(
        queue::connect(&untrusted).await.is_err(),
        "an untrusted certificate must be refused"
    );
    let _ = std::fs::remove_file(ca_file);
}
