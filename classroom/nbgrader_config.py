# nbgrader configuration for teaching featviz as graded assignments.
#
# Run every nbgrader command from this folder (`cd classroom`): it is the course directory.
# The six notebooks are one assignment, `featviz`; `source/featviz` is a link to ../notebooks,
# so the notebooks you read are the nbgrader source notebooks (there is no second copy).
# nbgrader writes release/, submitted/, autograded/, feedback/ and gradebook.db here.
c = get_config()  # noqa: F821 - provided by nbgrader when it reads this file

c.CourseDirectory.course_id = "featviz"

# Each notebook runs top to bottom in well under a minute on a laptop; the limit is per cell
# and leaves room for a slow, shared grading machine.
c.Execute.timeout = 900
