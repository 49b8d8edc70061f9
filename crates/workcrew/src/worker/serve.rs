//! The serving loop: handshake, then calls, cancels, pings and shutdown.
//!
//! # Implementation notes
//!
//! One task reads the channel and answers `PING` at once, so heartbeats are
//! answered even while every call is busy. Each `CALL` runs in its own task
//! (owned by a `JoinSet`), racing its cancellation token; answers go to one
//! writer task through a channel, so frames are never interleaved. On
//! `SHUTDOWN` or end of file the reader stops, running calls finish and are
//! answered, then `serve` returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::handler::{error, Handler};
use super::{ServeError, Worker};
use crate::protocol::{ErrorKind, FrameCodec, Hello, Message, PROTOCOL_VERSION};

pub(crate) async fn serve_on(worker: Worker, stream: UnixStream) -> Result<(), ServeError> {
    let mut chan = Framed::new(stream, FrameCodec::default());
    let mut functions: Vec<String> = worker.functions.keys().cloned().collect();
    functions.sort();
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        functions,
        concurrency: worker.concurrency,
        encodings: worker.encodings.clone(),
        pid: Some(std::process::id()),
    };
    chan.send(Message::Hello(hello).to_frame()).await?;
    let welcome = match chan.next().await {
        None => return Ok(()), // the pool went away before welcoming us
        Some(frame) => match Message::from_frame(frame?)? {
            Message::Welcome(w) => w,
            other => return Err(ServeError::Unexpected(format!("{other:?}"))),
        },
    };
    if !worker.encodings.contains(&welcome.encoding) {
        return Err(ServeError::Unexpected(format!(
            "encoding {:?} was not offered",
            welcome.encoding
        )));
    }
    let encoding = welcome.encoding;
    // The announced limit applies from now on, both ways.
    *chan.codec_mut() = FrameCodec::new(welcome.max_frame);
    let (mut sink, mut source) = chan.split();

    // The writer: every answer goes through here, one frame at a time.
    let (out, mut outbox) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = outbox.recv().await {
            sink.send(m.to_frame()).await?;
        }
        sink.close().await
    });

    let in_flight: Arc<Mutex<HashMap<u64, CancellationToken>>> = Arc::default();
    let mut calls = JoinSet::new();
    let mut result = Ok(());
    while let Some(frame) = source.next().await {
        let message = match frame
            .map_err(ServeError::from)
            .and_then(|f| Ok(Message::from_frame(f)?))
        {
            Ok(m) => m,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        match message {
            Message::Call {
                id,
                function,
                payload,
            } => {
                let Some(handler) = worker.functions.get(&function).map(Arc::clone) else {
                    let _ = out.send(Message::Error {
                        id,
                        error: error(
                            ErrorKind::UnknownFunction,
                            format!("no function named {function:?}"),
                        ),
                    });
                    continue;
                };
                let token = CancellationToken::new();
                lock(&in_flight).insert(id, token.clone());
                let (out, in_flight) = (out.clone(), Arc::clone(&in_flight));
                calls.spawn(run_call(
                    handler, id, encoding, payload, token, out, in_flight,
                ));
            }
            Message::Cancel { id } => {
                if let Some(token) = lock(&in_flight).get(&id) {
                    token.cancel();
                }
            }
            Message::Ping { nonce } => {
                let _ = out.send(Message::Pong { nonce });
            }
            Message::Shutdown => break,
            other => {
                result = Err(ServeError::Unexpected(format!("{other:?}")));
                break;
            }
        }
        // Reap finished calls so the set stays small.
        while calls.try_join_next().is_some() {}
    }
    while calls.join_next().await.is_some() {}
    drop(out);
    writer
        .await
        .map_err(|e| ServeError::Unexpected(e.to_string()))??;
    result
}

async fn run_call(
    handler: Arc<dyn Handler>,
    id: u64,
    encoding: crate::protocol::Encoding,
    payload: bytes::Bytes,
    token: CancellationToken,
    out: mpsc::UnboundedSender<Message>,
    in_flight: Arc<Mutex<HashMap<u64, CancellationToken>>>,
) {
    let answer = tokio::select! {
        r = handler.call(encoding, payload) => r,
        _ = token.cancelled() => Err(error(ErrorKind::Cancelled, format!("call {id} cancelled"))),
    };
    lock(&in_flight).remove(&id);
    let message = match answer {
        Ok(payload) => Message::Result { id, payload },
        Err(error) => Message::Error { id, error },
    };
    // A closed writer means the channel is gone; nobody is left to tell.
    let _ = out.send(message);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
