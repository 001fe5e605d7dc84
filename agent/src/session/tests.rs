use nightowl_proto::v1::{Ack, ActionRequest};
use prost::Message;

use super::*;

#[test]
fn limits_are_heard_and_unknown_messages_ignored() {
    let (policies, _receiver) = watch::channel(None);
    assert_eq!(heard(CollectorMessage::ack(5), &policies), Heard::Ack(5));
    let limits = CollectorMessage::limits(Limits { max_message_bytes: 8192, max_results_per_report: 50 });
    assert_eq!(
        heard(limits, &policies),
        Heard::Limits(ReportLimits { max_message_bytes: 8192, max_results: 50 })
    );
    let action =
        CollectorMessage { msg: Some(collector_message::Msg::ActionRequest(ActionRequest::default())) };
    assert_eq!(heard(action, &policies), Heard::Other);
    // A variant of a later protocol version (oneof field 99) decodes as no message.
    let mut later = Vec::new();
    prost::encoding::message::encode(99, &Ack { seq: 1 }, &mut later);
    let decoded = CollectorMessage::decode(later.as_slice()).unwrap();
    assert_eq!(decoded.msg, None);
    assert_eq!(heard(decoded, &policies), Heard::Other);
}
