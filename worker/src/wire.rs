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

pub fn from_wire<T: DeserializeOwned>(msg: SerializedMessage) -> Result<T, BoxedDowncastErr> {
    match msg {
        SerializedMessage::Cast { variant, args, .. } if variant == JSON_VARIANT => {
            serde_json::from_slice(&args).map_err(|e| {
                tracing::warn!("a message from a remote node does not parse: {e}");
                BoxedDowncastErr
            })
        }
        _ => {
            tracing::warn!("a message from a remote node is not in storm's wire format");
            Err(BoxedDowncastErr)
        }
    }
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
        let msg = WorkerMsg::Ping { timeout_ms: 3000 };
        let back = WorkerMsg::deserialize(msg.clone().serialize().unwrap()).unwrap();
        assert!(matches!(back, WorkerMsg::Ping { timeout_ms: 3000 }));
        let ev = ToCoordinator::Worker(WorkerEvent::Alive {
            worker: "node/w0".into(),
        });
        let back = ToCoordinator::deserialize(ev.serialize().unwrap()).unwrap();
        assert!(
            matches!(back, ToCoordinator::Worker(WorkerEvent::Alive { worker }) if worker == "node/w0")
        );
    }

    #[test]
    fn foreign_payloads_are_refused() {
        let foreign = SerializedMessage::Cast {
            variant: "Other".into(),
            args: b"{}".to_vec(),
            metadata: None,
        };
        assert!(WorkerMsg::deserialize(foreign).is_err());
        let garbage = SerializedMessage::Cast {
            variant: JSON_VARIANT.into(),
            args: b"not json".to_vec(),
            metadata: None,
        };
        assert!(WorkerMsg::deserialize(garbage).is_err());
    }
}
