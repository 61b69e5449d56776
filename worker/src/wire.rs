//! How actor messages cross process boundaries. With ractor's `cluster` feature every message type must
//! implement [`ractor::Message`] itself; types that travel between nodes serialize as JSON (the same serde
//! enums the coordinator uses in-process), everything else says it is local-only.

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The `variant` field of every serialized message: one tag, because the JSON body names the variant.
const JSON_VARIANT: &str = "storm-json-v1";

pub fn to_wire<T: Serialize>(msg: &T) -> Result<SerializedMessage, BoxedDowncastErr> {
    let args = serde_json::to_vec(msg).map_err(|e| {
        tracing::warn!("cannot serialize a message for a remote actor: {e}");
        BoxedDowncastErr
    })?;
    Ok(SerializedMessage::Cast {
        variant: JSON_VARIANT.into(),
        args,
        metadata: None,
    })
}

/// Decodes a message from another node, saying why it is not one of ours.
pub fn decode<T: DeserializeOwned>(msg: SerializedMessage) -> Result<T, String> {
    match msg {
        SerializedMessage::Cast { variant, args, .. } if variant == JSON_VARIANT => {
            serde_json::from_slice(&args)
                .map_err(|e| format!("a message from another node does not parse: {e}"))
        }
        _ => Err("a message from another node is not in storm's wire format".into()),
    }
}

pub fn from_wire<T: DeserializeOwned>(msg: SerializedMessage) -> Result<T, BoxedDowncastErr> {
    decode(msg).map_err(|why| {
        tracing::warn!("{why}");
        BoxedDowncastErr
    })
}

/// A fresh random 128-bit secret in hex (cluster cookies, host keys).
pub fn random_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Implements [`ractor::Message`] for a serde type so that it can be sent to actors on other nodes.
#[macro_export]
macro_rules! remote_message {
    ($t:ty) => {
        impl ractor::Message for $t {
            fn serializable() -> bool {
                true
            }
            fn serialize(
                self,
            ) -> Result<ractor::message::SerializedMessage, ractor::message::BoxedDowncastErr> {
                $crate::wire::to_wire(&self)
            }
            fn deserialize(
                msg: ractor::message::SerializedMessage,
            ) -> Result<Self, ractor::message::BoxedDowncastErr> {
                $crate::wire::from_wire(msg)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ToCoordinator, WorkerEvent, WorkerMsg};
    use ractor::Message;

    #[test]
    fn worker_messages_round_trip_through_the_wire_format() {
        let msg = WorkerMsg::Keyed {
            key: "k".into(),
            msg: Box::new(WorkerMsg::Ping { timeout_ms: 3000 }),
        };
        let back = WorkerMsg::deserialize(msg.serialize().unwrap()).unwrap();
        assert!(
            matches!(back, WorkerMsg::Keyed { key, msg } if key == "k" && matches!(*msg, WorkerMsg::Ping { timeout_ms: 3000 }))
        );
        let ev = ToCoordinator::Worker {
            key: "k".into(),
            event: WorkerEvent::Alive {
                worker: "node/w0".into(),
            },
        };
        let back = ToCoordinator::deserialize(ev.serialize().unwrap()).unwrap();
        assert!(
            matches!(back, ToCoordinator::Worker { key, event: WorkerEvent::Alive { worker } } if worker == "node/w0" && key == "k")
        );
    }

    #[test]
    fn foreign_payloads_are_refused() {
        let foreign = SerializedMessage::Cast {
            variant: "Other".into(),
            args: b"{}".to_vec(),
            metadata: None,
        };
        let undecodable = |m| match WorkerMsg::deserialize(m).unwrap() {
            WorkerMsg::Undecodable { why } => why,
            other => panic!("decoded as {other:?}"),
        };
        assert!(undecodable(foreign).contains("not in storm's wire format"));
        let garbage = SerializedMessage::Cast {
            variant: JSON_VARIANT.into(),
            args: b"not json".to_vec(),
            metadata: None,
        };
        assert!(undecodable(garbage).contains("does not parse"));
        // a well-formed message without a key is no more trusted than garbage
        let unkeyed = WorkerMsg::Cancel.serialize().unwrap();
        assert!(
            undecodable(unkeyed).contains("Cancel message from another node without a host key")
        );
        assert!(ToCoordinator::deserialize(SerializedMessage::Cast {
            variant: JSON_VARIANT.into(),
            args: b"{}".to_vec(),
            metadata: None,
        })
        .is_err());
        assert_eq!(random_secret().unwrap().len(), 32);
        assert_ne!(random_secret().unwrap(), random_secret().unwrap());
    }
}
