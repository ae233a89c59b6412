//! The `Instrument` gRPC service tokio-console talks to. Each call only registers a bounded queue with the
//! [`Hub`] (or flips its pause flag); the agent thread fills the queues, and tonic drains them at the pace
//! the client reads.

use crate::console::hub::Hub;
use console_api::instrument::instrument_server::Instrument;
use console_api::instrument::{
    InstrumentRequest, PauseRequest, PauseResponse, ResumeRequest, ResumeResponse, State, StateRequest,
    TaskDetailsRequest, Update,
};
use console_api::tasks::TaskDetails;
use std::sync::Arc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub(crate) struct Service {
    hub: Arc<Hub>,
}

impl Service {
    pub(crate) fn new(hub: Arc<Hub>) -> Service {
        Service { hub }
    }
}

#[tonic::async_trait]
impl Instrument for Service {
    type WatchUpdatesStream = ReceiverStream<Result<Update, Status>>;
    type WatchTaskDetailsStream = ReceiverStream<Result<TaskDetails, Status>>;
    type WatchStateStream = ReceiverStream<Result<State, Status>>;

    async fn watch_updates(&self, _: Request<InstrumentRequest>) -> Result<Response<Self::WatchUpdatesStream>, Status> {
        Ok(Response::new(ReceiverStream::new(self.hub.add_client()?)))
    }

    async fn watch_task_details(
        &self,
        request: Request<TaskDetailsRequest>,
    ) -> Result<Response<Self::WatchTaskDetailsStream>, Status> {
        let id = request.into_inner().id.ok_or_else(|| Status::invalid_argument("a task id is required"))?;
        Ok(Response::new(ReceiverStream::new(self.hub.add_details(id.id)?)))
    }

    async fn watch_state(&self, _: Request<StateRequest>) -> Result<Response<Self::WatchStateStream>, Status> {
        Ok(Response::new(ReceiverStream::new(self.hub.add_state()?)))
    }

    async fn pause(&self, _: Request<PauseRequest>) -> Result<Response<PauseResponse>, Status> {
        self.hub.set_paused(true);
        Ok(Response::new(PauseResponse {}))
    }

    async fn resume(&self, _: Request<ResumeRequest>) -> Result<Response<ResumeResponse>, Status> {
        self.hub.set_paused(false);
        Ok(Response::new(ResumeResponse {}))
    }
}
