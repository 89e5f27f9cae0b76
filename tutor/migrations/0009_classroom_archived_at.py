from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tutor", "0008_steps"),
    ]

    operations = [
        migrations.AddField(
            model_name="classroom",
            name="archived_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
