// A ThreadArea is this thread's rseq registration: it cannot leave the thread.
use restartable::ThreadArea;

fn main() {
    let area = ThreadArea::current().unwrap();
    std::thread::spawn(move || area.cpu_id()).join().unwrap();
}
