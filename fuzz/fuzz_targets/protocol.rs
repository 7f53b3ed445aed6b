//! Fuzz target: every JSON message the agent or the coordinator (server and operator CLI)
//! decodes, from the same bytes.
//!
//! Each input is decoded as every message type. Decoding must never panic, and a message that
//! decodes must encode and decode again to an equal value (the agent's outbox keeps reports as
//! JSON on disk and reads them back; the coordinator stores what it decoded). It does not
//! exercise HTTP framing or authentication. The same bytes are also read as a signed
//! revision's manifest and signature file: a manifest that parses writes back to a text that
//! parses to the same manifest.

#![no_main]

use std::fmt::Debug;

use hoist_protocol::agent::{
    Heartbeat, HeartbeatAck, LocalRollback, LocalRollbackAck, PollRequest, PollResponse,
    RegisterRequest, RegisterResponse, Report, ReportAck,
};
use hoist_protocol::operator::{
    Application, ApplicationList, ApplyPipeline, BundleInfo, CreateApplication, CreateDeployment,
    CreateGroup, CreateOperatorToken, CreateRegistrationToken, CreateRelease, CreateRevision,
    CreateWebhook, Decision, Deployment, DeploymentGroup, DeploymentList, GroupList, HostInfo,
    HostList, OperatorToken, OperatorTokenList, Pipeline, PipelineList, RegistrationToken,
    RegistrationTokenList, Release, ReleaseList, RevisionInfo, SetHostTags, UpdateGroup,
    WebhookEvent, WebhookList, WebhookTest,
};
use hoist_protocol::signature::{Manifest, SignedManifest};
use hoist_protocol::ErrorBody;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(data: &[u8]) {
    let Ok(first) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let encoded = match serde_json::to_vec(&first) {
        Ok(encoded) => encoded,
        Err(e) => panic!("{first:?} decoded but does not encode: {e}"),
    };
    match serde_json::from_slice::<T>(&encoded) {
        Ok(second) => assert_eq!(
            first,
            second,
            "changed after a round trip through {}",
            String::from_utf8_lossy(&encoded)
        ),
        Err(e) => panic!(
            "{first:?} encodes as {} which does not decode: {e}",
            String::from_utf8_lossy(&encoded)
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    // What the coordinator's API decodes from hosts and operators.
    round_trip::<RegisterRequest>(data);
    round_trip::<PollRequest>(data);
    round_trip::<Report>(data);
    round_trip::<Heartbeat>(data);
    round_trip::<LocalRollback>(data);
    round_trip::<CreateApplication>(data);
    round_trip::<CreateGroup>(data);
    round_trip::<CreateRevision>(data);
    round_trip::<CreateDeployment>(data);
    round_trip::<CreateWebhook>(data);
    round_trip::<UpdateGroup>(data);
    round_trip::<SetHostTags>(data);
    round_trip::<CreateRegistrationToken>(data);
    round_trip::<CreateOperatorToken>(data);
    round_trip::<ApplyPipeline>(data);
    round_trip::<CreateRelease>(data);
    round_trip::<Decision>(data);
    // What the agent decodes from the coordinator.
    round_trip::<RegisterResponse>(data);
    round_trip::<PollResponse>(data);
    round_trip::<ReportAck>(data);
    round_trip::<HeartbeatAck>(data);
    round_trip::<LocalRollbackAck>(data);
    round_trip::<ErrorBody>(data);
    // What the operator CLI decodes from the coordinator.
    round_trip::<Application>(data);
    round_trip::<ApplicationList>(data);
    round_trip::<DeploymentGroup>(data);
    round_trip::<GroupList>(data);
    round_trip::<RevisionInfo>(data);
    round_trip::<RegistrationToken>(data);
    round_trip::<HostInfo>(data);
    round_trip::<HostList>(data);
    round_trip::<BundleInfo>(data);
    round_trip::<Deployment>(data);
    round_trip::<DeploymentList>(data);
    round_trip::<RegistrationTokenList>(data);
    round_trip::<OperatorToken>(data);
    round_trip::<OperatorTokenList>(data);
    round_trip::<Pipeline>(data);
    round_trip::<PipelineList>(data);
    round_trip::<Release>(data);
    round_trip::<ReleaseList>(data);
    // What the agent reads of a signed revision.
    round_trip::<SignedManifest>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = Manifest::parse(text) {
            assert_eq!(Manifest::parse(&m.to_text()).as_ref(), Ok(&m), "{text}");
        }
        if let Ok(signed) = SignedManifest::from_file_text(text) {
            let _ = signed.key_id();
        }
    }
    round_trip::<WebhookList>(data);
    round_trip::<WebhookTest>(data);
    // What a webhook receiver decodes.
    round_trip::<WebhookEvent>(data);
});
