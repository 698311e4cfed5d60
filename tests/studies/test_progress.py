"""Progress for a run whose output goes to a file: a timestamped line per step, with the time left."""

import io

from torchntk.studies.progress import LineLog


def test_a_line_per_step_with_elapsed_time_and_time_left():
    now = [100.0]
    out = io.StringIO()
    log = LineLog(out, clock=lambda: now[0], stamp=lambda: "12:00:00")
    task = log.task("Figure 3: depth 5", 4)
    now[0] += 90.0
    task.advance()
    now[0] += 3600.0 + 30.0
    task.advance(2)
    now[0] += 10.0
    task.advance()
    assert out.getvalue().splitlines() == [
        "12:00:00 Figure 3: depth 5: started, 4 to do",
        "12:00:00 Figure 3: depth 5: 1/4 done, 0:01:30 elapsed, about 0:04:30 left",
        # 3 done in 3,720 s: 1,240 s each for the one left.
        "12:00:00 Figure 3: depth 5: 3/4 done, 1:02:00 elapsed, about 0:20:40 left",
        "12:00:00 Figure 3: depth 5: 4/4 done, 1:02:10 elapsed",
    ]
