#include "front/handoff.h"

#include "front/sluiced.h"

bool handoff_accept(struct front_thread *t, int fd, const struct sockaddr *sa,
		    const char *listener)
{
	(void)t;
	(void)fd;
	(void)sa;
	(void)listener;
	return false;
}

void handoff_thread_stop(struct front_thread *t)
{
	(void)t;
}
