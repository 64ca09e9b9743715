//! TEMPORARY stand-in with the agreed API; replaced by the bus branch on merge.
/// Producer.
pub struct Producer<T>(crossbeam_channel::Sender<T>);
/// Consumer.
pub struct Consumer<T>(crossbeam_channel::Receiver<T>);
/// Channel.
pub fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let (s, r) = crossbeam_channel::bounded(capacity);
    (Producer(s), Consumer(r))
}
impl<T: Send> Producer<T> {
    /// Push.
    pub fn push(&mut self, value: T) -> Result<bool, T> {
        self.0
            .try_send(value)
            .map(|_| true)
            .map_err(|e| e.into_inner())
    }
}
impl<T: Send> Consumer<T> {
    /// Pop.
    pub fn pop(&mut self) -> Option<T> {
        self.0.try_recv().ok()
    }
    /// Pop batch.
    pub fn pop_batch(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.0.try_recv() {
                Ok(v) => out.push(v),
                Err(_) => break,
            }
            n += 1;
        }
        n
    }
}
