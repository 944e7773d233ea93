"""The drawing app: the Voila page (:mod:`.page`) with its Draw (:mod:`.draw`) and Review (:mod:`.review`)
tabs, the HTML and pictures they show (:mod:`.views`), and how it is served (:mod:`.command`,
:mod:`.server`). Nothing is imported here: a kernel loads only the tab modules it runs.
"""
