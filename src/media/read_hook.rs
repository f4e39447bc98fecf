//! A pass-through interceptor whose one job is a hook on inbound packets: writes pass unchanged,
//! reads go through [`ReadHook::on_read`] (which may mark or rewrite them) in arrival order. The
//! RTCP tap and the RTX unwrapper are hooks; the queueing around them lives here once.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// What a [`ReadInterceptor`] does with inbound packets and remote streams.
pub trait ReadHook: Send + Sync {
    /// One inbound packet, before it goes on toward the application.
    fn on_read(&mut self, msg: &mut TaggedPacket);
    /// A remote stream was bound (negotiated, or its first packet arrived).
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    /// A remote stream went away.
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The interceptor around a [`ReadHook`].
pub struct ReadInterceptor<H> {
    /// The hook.
    pub hook: H,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl<H: ReadHook> ReadInterceptor<H> {
    /// An interceptor running `hook` on every inbound packet.
    pub fn with_hook(hook: H) -> Self {
        Self {
            hook,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl<H: ReadHook> Protocol<TaggedPacket, TaggedPacket, ()> for ReadInterceptor<H> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        self.hook.on_read(&mut msg);
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl<H: ReadHook> Interceptor for ReadInterceptor<H> {
    /// Writes are queued unchanged (only reads are the hook's).
    fn passes_writes_through(&self) -> bool {
        true
    }
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.hook.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.hook.unbind_remote_stream(info);
    }
}
