"""Four-eyes in the database: an approval by anyone who started or submitted the task is refused.

``onboarding.services`` checks the same rule first (and names it); this trigger makes an approval by a
worker unrepresentable even for code that bypasses the services. It reads the append-only transition
trail, which the services write in the same transaction as the state change."""

from django.db import migrations

FORWARD = """
CREATE FUNCTION core_onboardingtask_four_eyes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'APPROVED' AND NEW.approved_by_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM core_onboardingtransition t
        WHERE t.task_id = NEW.id AND t.by_id = NEW.approved_by_id
          AND t.to_state IN ('IN_PROGRESS', 'AWAITING_APPROVAL')
    ) THEN
        RAISE EXCEPTION 'four-eyes: user % started or submitted task %', NEW.approved_by_id, NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER core_onboardingtask_four_eyes BEFORE INSERT OR UPDATE ON core_onboardingtask
    FOR EACH ROW EXECUTE FUNCTION core_onboardingtask_four_eyes();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS core_onboardingtask_four_eyes ON core_onboardingtask;
DROP FUNCTION IF EXISTS core_onboardingtask_four_eyes();
"""


class Migration(migrations.Migration):

    dependencies = [("onboarding", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
