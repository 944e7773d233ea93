"""The learning loop: one cycle (:mod:`.cycle`, its stages in :mod:`.stages`, what it leaves behind in
:mod:`.record`), one at a time (:mod:`.lock`), how far it got (:mod:`.watermarks`), when it runs
(:mod:`.trigger`, :mod:`.schedule`), and what its notebooks share (:mod:`.notebooks`)."""
