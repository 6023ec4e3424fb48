"""The experiment tag: a name a sweep gives the runs it trains (`ltbench run --tag`), recorded
in their result rows and usable as a report filter (`ltbench report --tag`).

A tag annotates a run, it does not define one: it is not part of the run id, so a run already
done under another tag is reused and keeps its row and its tag. It travels with the data root
in the run's context (ltbench.run_context), to jobs and ranks alike.
"""

from ltbench.errors import UserError

MAX_LENGTH = 100


def check_tag(value) -> str:
    """The tag as given (blanks around it dropped), or a UserError saying what is allowed."""
    allowed = (f"a tag is 1 to {MAX_LENGTH} printable characters without commas, e.g. --tag ablation-lr "
               "(quote it if it has spaces)")
    if not isinstance(value, str):
        raise UserError(f"the tag {value!r} is not text ({type(value).__name__})", hint=allowed)
    tag = value.strip()
    if not tag:
        raise UserError("the tag is empty", hint=allowed)
    unprintable = sorted({repr(c) for c in tag if not c.isprintable()})
    if unprintable:
        raise UserError(f"the tag {tag!r} holds unprintable characters ({', '.join(unprintable)})", hint=allowed)
    if "," in tag:
        # a comma would read as a list separator where tags are listed (--tag a,b, CSV cells)
        raise UserError(f"the tag {tag!r} holds a comma", hint=allowed)
    if len(tag) > MAX_LENGTH:
        raise UserError(f"the tag is {len(tag)} characters long", hint=allowed)
    return tag
