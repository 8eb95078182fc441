//! The broker connection, MQTT 3.1.1 or MQTT 5 (rumqttc's two clients),
//! behind the few operations the source needs: poll for the next event,
//! subscribe, publish a rebirth request, disconnect.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::{v5, Transport};

use crate::config::{MqttProtocol, MqttSourceConfig};

/// What the source reacts to.
#[derive(Debug)]
pub enum LinkEvent {
    /// CONNACK: connected; whether the broker kept the session.
    Connected { session_present: bool },
    /// SUBACK with this many refused filters.
    Subscribed { refused: usize },
    /// A message.
    Message { topic: String, payload: Bytes },
    /// Anything else (pings, acks, outgoing packets).
    Other,
}

/// A client and its event loop, of either protocol version.
pub enum Link {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(v5::AsyncClient, Box<v5::EventLoop>),
}

/// Settings shared by both versions.
pub struct LinkOptions<'a> {
    pub client_id: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub password: Option<String>,
    pub transport: Option<Transport>,
    pub max_packet: usize,
    pub requests: usize,
}

impl Link {
    /// Builds the client (it connects on the first poll).
    pub fn new(cfg: &MqttSourceConfig, o: LinkOptions<'_>) -> Link {
        match cfg.protocol {
            MqttProtocol::V311 => {
                let mut opts = rumqttc::MqttOptions::new(o.client_id, o.host, o.port);
                opts.set_keep_alive(cfg.keep_alive.0);
                opts.set_clean_session(cfg.clean_session);
                opts.set_max_packet_size(o.max_packet, o.max_packet);
                if let Some(user) = &cfg.username {
                    opts.set_credentials(user.clone(), o.password.unwrap_or_default());
                }
                if let Some(t) = o.transport {
                    opts.set_transport(t);
                }
                let (c, e) = rumqttc::AsyncClient::new(opts, o.requests);
                Link::V4(c, Box::new(e))
            }
            MqttProtocol::V5 => {
                let mut opts = v5::MqttOptions::new(o.client_id, o.host, o.port);
                opts.set_keep_alive(cfg.keep_alive.0);
                opts.set_clean_start(cfg.clean_session);
                if !cfg.clean_session {
                    // MQTT 5 ends a session at disconnect unless it is given an expiry.
                    opts.set_session_expiry_interval(Some(SESSION_EXPIRY.as_secs() as u32));
                }
                opts.set_max_packet_size(Some(o.max_packet as u32));
                if let Some(user) = &cfg.username {
                    opts.set_credentials(user.clone(), o.password.unwrap_or_default());
                }
                if let Some(t) = o.transport {
                    opts.set_transport(t);
                }
                let (c, e) = v5::AsyncClient::new(opts, o.requests);
                Link::V5(c, Box::new(e))
            }
        }
    }

    /// The next event; `Err` with the reason when the connection is lost or refused.
    pub async fn poll(&mut self) -> Result<LinkEvent, String> {
        match self {
            Link::V4(_, events) => {
                use rumqttc::{ConnectionError, Event, Packet, SubscribeReasonCode};
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        Ok(LinkEvent::Connected { session_present: a.session_present })
                    }
                    Ok(Event::Incoming(Packet::SubAck(a))) => Ok(LinkEvent::Subscribed {
                        refused: a.return_codes.iter().filter(|c| matches!(c, SubscribeReasonCode::Failure)).count(),
                    }),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        Ok(LinkEvent::Message { topic: p.topic, payload: p.payload })
                    }
                    Ok(_) => Ok(LinkEvent::Other),
                    Err(ConnectionError::ConnectionRefused(code)) => {
                        Err(format!("the broker refused the connection: {code:?}"))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Link::V5(_, events) => {
                use v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
                use v5::{ConnectionError, Event};
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        Ok(LinkEvent::Connected { session_present: a.session_present })
                    }
                    Ok(Event::Incoming(Packet::SubAck(a))) => Ok(LinkEvent::Subscribed {
                        refused: a
                            .return_codes
                            .iter()
                            .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                            .count(),
                    }),
                    Ok(Event::Incoming(Packet::Publish(p))) => match String::from_utf8(p.topic.to_vec()) {
                        Ok(topic) => Ok(LinkEvent::Message { topic, payload: p.payload }),
                        // A topic name must be UTF-8 (MQTT 5 §1.5.4); nothing can route it.
                        Err(_) => Ok(LinkEvent::Other),
                    },
                    Ok(_) => Ok(LinkEvent::Other),
                    Err(ConnectionError::ConnectionRefused(code)) => {
                        Err(format!("the broker refused the connection: {code:?}"))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Subscribes `filters` at QoS 1 (queued; the SUBACK comes as an event).
    pub fn subscribe(&self, filters: &[String]) -> Result<(), String> {
        match self {
            Link::V4(c, _) => c
                .try_subscribe_many(
                    filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), rumqttc::QoS::AtLeastOnce)),
                )
                .map_err(|e| e.to_string()),
            Link::V5(c, _) => c
                .try_subscribe_many(
                    filters.iter().map(|f| v5::mqttbytes::v5::Filter::new(f.clone(), v5::mqttbytes::QoS::AtLeastOnce)),
                )
                .map_err(|e| e.to_string()),
        }
    }

    /// Publishes at QoS 0, not retained (a Sparkplug rebirth request).
    pub fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Link::V4(c, _) => c.try_publish(topic, rumqttc::QoS::AtMostOnce, false, payload).map_err(|e| e.to_string()),
            Link::V5(c, _) => {
                c.try_publish(topic, v5::mqttbytes::QoS::AtMostOnce, false, payload).map_err(|e| e.to_string())
            }
        }
    }

    /// Queues a message at QoS 1 (at least once), not retained.
    pub fn publish_at_least_once(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Link::V4(c, _) => {
                c.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).map_err(|e| e.to_string())
            }
            Link::V5(c, _) => {
                c.try_publish(topic, v5::mqttbytes::QoS::AtLeastOnce, false, payload).map_err(|e| e.to_string())
            }
        }
    }

    /// Asks for a clean DISCONNECT (best effort).
    pub fn disconnect(&self) {
        let _ = match self {
            Link::V4(c, _) => c.try_disconnect().map_err(|e| e.to_string()),
            Link::V5(c, _) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

/// How long an MQTT 5 broker keeps a persistent session (`clean_session = false`) after a disconnect.
const SESSION_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
